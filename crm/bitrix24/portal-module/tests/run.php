<?php
// Runs the module's logic against stubs.php and prints what happened as JSON (checked by
// crm/bitrix24/module_php_test.go). php run.php <module secret override|->

define('MODULE_DIR', dirname(__DIR__) . '/pbxbridge.connector');
require __DIR__ . '/stubs.php';
require MODULE_DIR . '/include.php';

use Bitrix\Main\Config\Option;
use Bitrix\Rest\AppTable;
use Pbxbridge\Connector\AuthFull;
use Pbxbridge\Connector\EventProvider;
use Pbxbridge\Connector\Installer;
use Pbxbridge\Connector\Module;
use Pbxbridge\Connector\AuthProvider;
use Pbxbridge\Connector\AuthStorage;

$out = [];
Installer::install();
AuthProvider::instance()->setStorage(new AuthStorage())->addApplication(Module::clientId()); // include.php ran before the app existed
Installer::setPbxbridgeUrl('https://pbx.example.ru/');
$app = AppTable::getByClientId(Module::clientId());
$out['app'] = $app;
$out['remote_calls'] = AppTable::$remoteCalls;
$out['secret_len'] = strlen(Module::secret());

$check = function ($query, $scope) {
	$res = [];
	$ok = AuthFull::onRestCheckAuth($query, $scope, $res);
	return ['ok' => $ok, 'res' => $res];
};
$token = Installer::issueToken(1, 30);
$out['token_prefix'] = substr($token, 0, 4);
$out['stored_plain'] = strpos(json_encode(Option::$o), $token) !== false;
$out['telephony'] = $check(['auth' => $token], 'telephony');
$out['wrong'] = $check(['auth' => 'pbx.not-the-token'], 'telephony');
$out['other_app'] = $check(['auth' => 'a-cloud-token'], 'telephony');
$out['scope'] = $check(['auth' => $token], 'imbot');
$GLOBALS['REMOTE_ADDR'] = '192.0.2.7';
Option::set(Module::ID, 'allowed_ips', '10.0.0.5, 10.0.0.6');
$out['other_address'] = $check(['auth' => $token], 'telephony');
Option::set(Module::ID, 'allowed_ips', '');

$item = function ($client, $url) {
	return ['client_id' => $client, 'auth' => ['application_token' => 'apptok'], 'query' => ['QUERY_URL' => $url, 'QUERY_DATA' => [
		'event' => 'ONEXTERNALCALLSTART', 'event_handler_id' => '5',
		'data' => ['PHONE_NUMBER' => '+79001234567', 'USER_ID' => '1269', 'CALL_ID' => 'externalCall.1'],
		'ts' => (string)time(), 'auth' => ['access_token' => 'must-not-leak'],
	]]];
};
// The core makes its own provider first when no module replaced it (Sender::getDefaultProvider);
// the module's must still be the module's, and the stock one stay stock.
$stock = \Bitrix\Rest\Event\ProviderOAuth::instance();
EventProvider::onEventManagerInitialize();
$out['provider_is_module'] = \Bitrix\Rest\Event\Sender::$provider instanceof EventProvider
	&& !($stock instanceof EventProvider) && \Bitrix\Rest\Event\ProviderOAuth::instance() === $stock;
\Bitrix\Rest\Event\Sender::$provider->send([
	$item(Module::clientId(), 'https://pbx.example.ru/crm/b24/module/events'),
	$item(Module::clientId(), 'https://elsewhere.example.com/crm/b24/module/events'),
	$item('local.someone.else', 'https://app.example.com/handler'),
]);
$out['posts'] = \Bitrix\Main\Web\HttpClient::$posts;
$out['to_cloud'] = count(\Bitrix\Rest\Event\ProviderOAuth::$sent);
$out['log'] = $GLOBALS['LOG'] ?? [];
$out['secret'] = Module::secret();

Installer::revokeToken();
$out['revoked'] = $check(['auth' => $token], 'telephony');
Installer::uninstall();
$out['after_uninstall'] = ['apps' => count(AppTable::$rows), 'options' => count(Option::getForModule(Module::ID)), 'remote_calls' => AppTable::$remoteCalls];
echo json_encode($out, JSON_UNESCAPED_SLASHES | JSON_PRETTY_PRINT), "\n";
