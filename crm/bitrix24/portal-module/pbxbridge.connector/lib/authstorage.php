<?php
namespace Pbxbridge\Connector;

use Bitrix\Main\Config\Option;
use Bitrix\Rest\AuthStorageInterface;

/**
 * Keeps the tokens the module issues, in the module's options (b_option), never in the
 * managed cache only: a cache flush must not log pbxbridge out. Only a SHA-256 digest of each
 * token is the key; the token itself is not stored, so a copy of the database does not hand it
 * out.
 *
 * Each entry holds what \Bitrix\Rest\OAuth\Auth::onRestCheckAuth() needs: client_id, user_id,
 * expires, scope (no "status": the portal would update the application row from it).
 */
final class AuthStorage implements AuthStorageInterface
{
	const PREFIX = 'tok_';

	public static function key($accessToken)
	{
		// b_option.NAME is short: 40 hex digits of the digest are plenty.
		return self::PREFIX . substr(hash('sha256', (string)$accessToken), 0, 40);
	}

	public function store(array $authResult)
	{
		if (empty($authResult['access_token'])) {
			return;
		}
		$entry = [
			'client_id' => (string)$authResult['client_id'],
			'user_id' => (int)$authResult['user_id'],
			'expires' => (int)$authResult['expires'],
			'scope' => (string)$authResult['scope'],
		];
		if (isset($authResult['parameters']) && is_array($authResult['parameters'])) {
			$entry['parameters'] = $authResult['parameters'];
		}
		Option::set(Module::ID, self::key($authResult['access_token']), json_encode($entry));
		$this->sweep();
	}

	public function rewrite(array $authResult)
	{
		$this->store($authResult);
	}

	public function restore($accessToken)
	{
		$raw = Option::get(Module::ID, self::key($accessToken), '');
		if ($raw === '') {
			return false;
		}
		$entry = json_decode($raw, true);
		if (!is_array($entry) || empty($entry['client_id'])) {
			return false;
		}
		$entry['access_token'] = (string)$accessToken;
		return $entry;
	}

	/**
	 * Drops one token (rotation, uninstall).
	 */
	public function forget($accessToken)
	{
		Option::delete(Module::ID, ['name' => self::key($accessToken)]);
	}

	/**
	 * Drops the entry stored under a key (the long-lived token is remembered by its key only).
	 */
	public function forgetKey($key)
	{
		if (strpos((string)$key, self::PREFIX) === 0) {
			Option::delete(Module::ID, ['name' => $key]);
		}
	}

	/**
	 * Removes expired entries (short-lived tokens Bitrix24 asks the provider for).
	 */
	private function sweep()
	{
		$now = time();
		foreach (Option::getForModule(Module::ID) as $name => $value) {
			if (strpos($name, self::PREFIX) !== 0) {
				continue;
			}
			$entry = json_decode($value, true);
			if (!is_array($entry) || (int)$entry['expires'] < $now) {
				Option::delete(Module::ID, ['name' => $name]);
			}
		}
	}
}
