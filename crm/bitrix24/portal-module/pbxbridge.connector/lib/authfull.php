<?php
namespace Pbxbridge\Connector;

use Bitrix\Rest\OAuth\Auth;

/**
 * The authorisation validator (rest:onRestCheckAuth, registered before the stock one): the
 * module's tokens are checked against the module's storage, without the cloud; all others as the
 * stock validator does (parent::check).
 *
 * It extends \Bitrix\Rest\OAuth\Auth on purpose: the inherited onRestCheckAuth() then gives the
 * request the authorisation type "oauth", which telephony.externalCall.register/finish,
 * telephony.externalLine.* and event.bind require (a custom type is refused with
 * WRONG_AUTH_TYPE), checks the expiry and the scope, and logs the user in.
 */
class AuthFull extends Auth
{
	protected static function check($accessToken)
	{
		$provider = AuthProvider::instance();
		if (!$provider->checkToken($accessToken)) {
			return parent::check($accessToken);
		}
		$allowed = Module::allowedAddresses();
		if ($allowed) {
			$from = \Bitrix\Main\Context::getCurrent()->getServer()->getRemoteAddr();
			if (!in_array($from, $allowed, true)) {
				return ['error' => 'invalid_token', 'error_description' => 'The pbxbridge token is not accepted from this address'];
			}
		}
		$authResult = $provider->getStorage()->restore($accessToken);
		if ($authResult === false || !$provider->checkClient($authResult['client_id'])) {
			return ['error' => 'invalid_token', 'error_description' => 'Token expired or invalid'];
		}
		return $authResult;
	}
}
