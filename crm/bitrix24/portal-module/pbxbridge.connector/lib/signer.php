<?php
namespace Pbxbridge\Connector;

/**
 * Signs the events the module posts to pbxbridge (pbxbridge checks them in
 * crm/bitrix24/module.go):
 *
 *   X-Pbxbridge-Timestamp: <unix seconds>
 *   X-Pbxbridge-Signature: sha256=<hex HMAC-SHA256(secret, timestamp . "." . body)>
 *
 * The body is the form-encoded event exactly as sent. Pure PHP, no Bitrix dependency, so it can
 * be checked on its own (php -r).
 */
final class Signer
{
	const TIMESTAMP_HEADER = 'X-Pbxbridge-Timestamp';
	const SIGNATURE_HEADER = 'X-Pbxbridge-Signature';

	/**
	 * @param string $secret the module secret shared with pbxbridge (auth.module_secret)
	 * @param string $body the request body
	 * @param int|null $now unix seconds (null: time())
	 * @return array<string,string> the two headers
	 */
	public static function headers($secret, $body, $now = null)
	{
		$ts = (string)($now === null ? time() : (int)$now);
		return [
			self::TIMESTAMP_HEADER => $ts,
			self::SIGNATURE_HEADER => 'sha256=' . hash_hmac('sha256', $ts . '.' . $body, (string)$secret),
		];
	}

	/**
	 * Form-encodes an event the way PHP and Bitrix24 do (data[KEY]=value, RFC 1738).
	 *
	 * @param array $data
	 * @return string
	 */
	public static function encode(array $data)
	{
		return http_build_query($data, '', '&');
	}
}
