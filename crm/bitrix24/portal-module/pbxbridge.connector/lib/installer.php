<?php
namespace Pbxbridge\Connector;

use Bitrix\Main\Config\Option;
use Bitrix\Main\Security\Random;
use Bitrix\Main\SystemException;
use Bitrix\Rest\AppTable;

/**
 * Creates, updates and removes the module's application and its token, all without the cloud:
 * the application row is written with AppTable::setSkipRemoteUpdate(true), so the portal does
 * not ask the OAuth server to register it (which an isolated box cannot reach).
 */
final class Installer
{
	/**
	 * The application row and the module secret (kept when they exist: a reinstall of the files
	 * does not log pbxbridge out).
	 */
	public static function install()
	{
		if (Module::secret() === '') {
			self::newSecret();
		}
		if (Module::clientId() === '' || !AppTable::getByClientId(Module::clientId())) {
			self::createApplication();
		}
	}

	public static function newSecret()
	{
		Option::set(Module::ID, 'module_secret', bin2hex(random_bytes(32)));
	}

	private static function createApplication()
	{
		$clientId = 'local.pbxbridge.' . strtolower(Random::getString(12));
		$url = Module::pbxbridgeUrl();
		AppTable::setSkipRemoteUpdate(true);
		try {
			$result = AppTable::add([
				'CLIENT_ID' => $clientId,
				'CODE' => $clientId,
				'CLIENT_SECRET' => Random::getString(32, true),
				'STATUS' => AppTable::STATUS_LOCAL,
				'ACTIVE' => AppTable::ACTIVE,
				'INSTALLED' => AppTable::INSTALLED,
				'SCOPE' => Module::SCOPE,
				'APP_NAME' => 'pbxbridge',
				// event.bind accepts handlers only on the host of the application's URL.
				'URL' => $url !== '' ? $url . '/' : 'https://pbxbridge.invalid/',
				'VERSION' => '1',
			]);
		} finally {
			AppTable::setSkipRemoteUpdate(false);
		}
		if (!$result->isSuccess()) {
			throw new SystemException('pbxbridge: cannot create the application: ' . implode('; ', $result->getErrorMessages()));
		}
		Option::set(Module::ID, 'client_id', $clientId);
	}

	/**
	 * Points the application at pbxbridge's public URL (the host of the event handlers).
	 */
	public static function setPbxbridgeUrl($url)
	{
		$url = rtrim(trim((string)$url), '/');
		if ($url !== '' && !preg_match('~^https?://[^/\s?#]+(/[^\s?#]*)?$~i', $url)) {
			throw new SystemException('pbxbridge: the pbxbridge URL must look like https://pbx.example.ru');
		}
		Option::set(Module::ID, 'pbxbridge_url', $url);
		$app = AppTable::getByClientId(Module::clientId());
		if ($app && $url !== '') {
			AppTable::setSkipRemoteUpdate(true);
			try {
				AppTable::update($app['ID'], ['URL' => $url . '/']);
			} finally {
				AppTable::setSkipRemoteUpdate(false);
			}
		}
	}

	/**
	 * Issues a new long-lived token for $userId (a portal administrator: event.bind needs one),
	 * valid for $days days, and revokes the previous one. The token is returned once; only its
	 * digest is kept.
	 *
	 * @return string the token
	 */
	public static function issueToken($userId, $days)
	{
		$userId = (int)$userId;
		$days = max(1, min(3650, (int)$days));
		if ($userId <= 0) {
			throw new SystemException('pbxbridge: the token needs a user id');
		}
		$storage = new AuthStorage();
		$provider = AuthProvider::instance()->setStorage($storage)->addApplication(Module::clientId());
		$auth = $provider->issue(Module::clientId(), $userId, $days * 86400, Module::SCOPE);
		self::revokeToken();
		Option::set(Module::ID, 'token_key', AuthStorage::key($auth['access_token']));
		Option::set(Module::ID, 'token_hint', substr($auth['access_token'], 0, 8) . '…');
		Option::set(Module::ID, 'token_expires', (string)$auth['expires']);
		Option::set(Module::ID, 'token_user_id', (string)$userId);
		return $auth['access_token'];
	}

	public static function revokeToken()
	{
		$key = Option::get(Module::ID, 'token_key', '');
		if ($key !== '') {
			(new AuthStorage())->forgetKey($key);
		}
		foreach (['token_key', 'token_hint', 'token_expires', 'token_user_id'] as $name) {
			Option::delete(Module::ID, ['name' => $name]);
		}
	}

	/**
	 * Removes the application (its event bindings go with it), the tokens and the settings.
	 */
	public static function uninstall()
	{
		$app = Module::clientId() !== '' ? AppTable::getByClientId(Module::clientId()) : null;
		if ($app) {
			AppTable::setSkipRemoteUpdate(true);
			try {
				\CRestUtil::cleanApp($app['ID'], true);
				AppTable::delete($app['ID']);
			} finally {
				AppTable::setSkipRemoteUpdate(false);
			}
		}
		Option::delete(Module::ID);
	}
}
