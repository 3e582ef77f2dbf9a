<?php
// pbxbridge portal module: lets pbxbridge use an isolated boxed Bitrix24 without the cloud
// OAuth server (crm/bitrix24/portal-module/README.md in the pbxbridge sources).

use Bitrix\Main\Loader;

Loader::registerAutoLoadClasses('pbxbridge.connector', [
	'Pbxbridge\\Connector\\Module' => 'lib/module.php',
	'Pbxbridge\\Connector\\Signer' => 'lib/signer.php',
	'Pbxbridge\\Connector\\AuthStorage' => 'lib/authstorage.php',
	'Pbxbridge\\Connector\\AuthProvider' => 'lib/authprovider.php',
	'Pbxbridge\\Connector\\AuthFull' => 'lib/authfull.php',
	'Pbxbridge\\Connector\\EventProvider' => 'lib/eventprovider.php',
	'Pbxbridge\\Connector\\Installer' => 'lib/installer.php',
]);

if (Loader::includeModule('rest')) {
	\Pbxbridge\Connector\AuthProvider::instance()
		->setStorage(new \Pbxbridge\Connector\AuthStorage())
		->addApplication(\Pbxbridge\Connector\Module::clientId());
}
