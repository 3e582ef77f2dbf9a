<?php
// pbxbridge portal module: installation (Marketplace → Installed solutions, or
// /bitrix/admin/partner_modules.php → "Install").

use Bitrix\Main\EventManager;
use Bitrix\Main\Loader;
use Bitrix\Main\Localization\Loc;
use Bitrix\Main\ModuleManager;

Loc::loadMessages(__FILE__);

class pbxbridge_connector extends CModule
{
	public $MODULE_ID = 'pbxbridge.connector';
	public $MODULE_VERSION;
	public $MODULE_VERSION_DATE;
	public $MODULE_NAME;
	public $MODULE_DESCRIPTION;
	public $PARTNER_NAME;
	public $PARTNER_URI;

	/** rest event handlers: [event, class, method, sort]; sorts below the stock handlers'. */
	private $handlers = [
		['onRestCheckAuth', '\\Pbxbridge\\Connector\\AuthFull', 'onRestCheckAuth', 90],
		['onApplicationManagerInitialize', '\\Pbxbridge\\Connector\\AuthProvider', 'onApplicationManagerInitialize', 90],
		['onEventManagerInitialize', '\\Pbxbridge\\Connector\\EventProvider', 'onEventManagerInitialize', 90],
	];

	public function __construct()
	{
		$arModuleVersion = [];
		include __DIR__ . '/version.php';
		$this->MODULE_VERSION = $arModuleVersion['VERSION'];
		$this->MODULE_VERSION_DATE = $arModuleVersion['VERSION_DATE'];
		$this->MODULE_NAME = Loc::getMessage('PBXBRIDGE_MODULE_NAME');
		$this->MODULE_DESCRIPTION = Loc::getMessage('PBXBRIDGE_MODULE_DESCRIPTION');
		$this->PARTNER_NAME = 'pbxbridge';
		$this->PARTNER_URI = '';
	}

	public function DoInstall()
	{
		global $APPLICATION;
		if (!ModuleManager::isModuleInstalled('rest')) {
			$APPLICATION->ThrowException(Loc::getMessage('PBXBRIDGE_NEEDS_REST'));
			return false;
		}
		if (version_compare(PHP_VERSION, '7.4.0', '<')) {
			$APPLICATION->ThrowException(Loc::getMessage('PBXBRIDGE_NEEDS_PHP'));
			return false;
		}
		ModuleManager::registerModule($this->MODULE_ID);
		$em = EventManager::getInstance();
		foreach ($this->handlers as $h) {
			$em->registerEventHandler('rest', $h[0], $this->MODULE_ID, $h[1], $h[2], $h[3]);
		}
		try {
			Loader::includeModule($this->MODULE_ID);
			\Pbxbridge\Connector\Installer::install();
		} catch (\Throwable $e) {
			$this->DoUninstall();
			$APPLICATION->ThrowException($e->getMessage());
			return false;
		}
		return true;
	}

	public function DoUninstall()
	{
		if (ModuleManager::isModuleInstalled($this->MODULE_ID) && Loader::includeModule($this->MODULE_ID)) {
			\Pbxbridge\Connector\Installer::uninstall();
		}
		$em = EventManager::getInstance();
		foreach ($this->handlers as $h) {
			$em->unRegisterEventHandler('rest', $h[0], $this->MODULE_ID, $h[1], $h[2]);
		}
		ModuleManager::unRegisterModule($this->MODULE_ID);
		return true;
	}
}
