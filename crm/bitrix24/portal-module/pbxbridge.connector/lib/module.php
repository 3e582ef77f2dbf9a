<?php
namespace Pbxbridge\Connector;

use Bitrix\Main\Config\Option;

/**
 * The module's settings, in b_option of module pbxbridge.connector.
 */
final class Module
{
	const ID = 'pbxbridge.connector';

	/** The prefix of the tokens the module issues (AuthProvider::checkToken). */
	const TOKEN_PREFIX = 'pbx.';

	/** Scopes of the module's application: what pbxbridge uses. */
	const SCOPE = 'telephony,crm,user,task';

	public static function clientId()
	{
		return Option::get(self::ID, 'client_id', '');
	}

	/** The pbxbridge public URL, e.g. https://pbx.example.ru (http.public.url). */
	public static function pbxbridgeUrl()
	{
		return rtrim(Option::get(self::ID, 'pbxbridge_url', ''), '/');
	}

	public static function secret()
	{
		return Option::get(self::ID, 'module_secret', '');
	}

	/** Source addresses allowed to use the module's tokens (empty: any). */
	public static function allowedAddresses()
	{
		$list = [];
		foreach (preg_split('/[\s,;]+/', Option::get(self::ID, 'allowed_ips', '')) as $ip) {
			if ($ip !== '') {
				$list[] = $ip;
			}
		}
		return $list;
	}

	/** The domain sent as auth[domain] with events (default: the main module's server name). */
	public static function domain()
	{
		$d = Option::get(self::ID, 'portal_domain', '');
		if ($d === '') {
			$d = Option::get('main', 'server_name', '');
		}
		if ($d === '') {
			$d = \Bitrix\Main\Context::getCurrent()->getServer()->getHttpHost();
		}
		return (string)$d;
	}
}
