<?php
// pbxbridge portal module: settings page (/bitrix/admin/settings.php?mid=pbxbridge.connector).
// Administrators only. It sets where pbxbridge is, issues and revokes the token, and shows what
// to put into pbxbridge's configuration.

use Bitrix\Main\Config\Option;
use Bitrix\Main\Loader;
use Bitrix\Main\Localization\Loc;
use Pbxbridge\Connector\Installer;
use Pbxbridge\Connector\Module;

if (!defined('B_PROLOG_INCLUDED') || B_PROLOG_INCLUDED !== true) {
	die();
}
global $APPLICATION, $USER;
if (!$USER->IsAdmin() || !Loader::includeModule('pbxbridge.connector') || !Loader::includeModule('rest')) {
	return;
}
Loc::loadMessages(__FILE__);

$h = function ($s) {
	return htmlspecialcharsbx((string)$s);
};
$errors = [];
$newToken = '';
if ($_SERVER['REQUEST_METHOD'] === 'POST' && check_bitrix_sessid()) {
	try {
		if (isset($_POST['save'])) {
			Installer::setPbxbridgeUrl(isset($_POST['pbxbridge_url']) ? $_POST['pbxbridge_url'] : '');
			Option::set(Module::ID, 'portal_domain', trim(isset($_POST['portal_domain']) ? $_POST['portal_domain'] : ''));
			Option::set(Module::ID, 'allowed_ips', trim(isset($_POST['allowed_ips']) ? $_POST['allowed_ips'] : ''));
		}
		if (isset($_POST['issue_token'])) {
			$newToken = Installer::issueToken((int)$_POST['token_user_id'], (int)$_POST['token_days']);
		}
		if (isset($_POST['revoke_token'])) {
			Installer::revokeToken();
		}
		if (isset($_POST['new_secret'])) {
			Installer::newSecret();
		}
	} catch (\Throwable $e) {
		$errors[] = $e->getMessage();
	}
}

foreach ($errors as $e) {
	CAdminMessage::ShowMessage(['MESSAGE' => $e, 'TYPE' => 'ERROR']);
}
if ($newToken !== '') {
	CAdminMessage::ShowMessage(['MESSAGE' => Loc::getMessage('PBXBRIDGE_TOKEN_ONCE'), 'DETAILS' => $h($newToken), 'TYPE' => 'OK', 'HTML' => true]);
}
$url = Module::pbxbridgeUrl();
if ($url === '') {
	CAdminMessage::ShowMessage(['MESSAGE' => Loc::getMessage('PBXBRIDGE_SET_URL'), 'TYPE' => 'ERROR']);
}
$expires = (int)Option::get(Module::ID, 'token_expires', '0');
$tokenState = $expires > 0
	? Loc::getMessage('PBXBRIDGE_TOKEN_STATE', ['#HINT#' => Option::get(Module::ID, 'token_hint', ''), '#USER#' => Option::get(Module::ID, 'token_user_id', ''), '#EXPIRES#' => ConvertTimeStamp($expires, 'FULL')])
	: Loc::getMessage('PBXBRIDGE_NO_TOKEN');
$scheme = \Bitrix\Main\Context::getCurrent()->getRequest()->isHttps() ? 'https' : 'http';
$portal = $scheme . '://' . (Module::domain() !== '' ? Module::domain() : \Bitrix\Main\Context::getCurrent()->getServer()->getHttpHost());
$yaml = "bitrix24:\n"
	. "  portal_url: " . $portal . "\n"
	. "  auth:\n"
	. "    mode: portal_token\n"
	. "    portal_token: " . ($newToken !== '' ? $newToken : '<' . Loc::getMessage('PBXBRIDGE_THE_TOKEN') . '>') . "\n"
	. "    module_secret: " . Module::secret() . "\n"
	. "    member_id: " . \CRestUtil::getMemberId() . "\n"
	. "  tls:\n"
	. "    ca_file: /etc/pbxbridge/portal-ca.pem   # " . Loc::getMessage('PBXBRIDGE_TLS_HINT') . "\n";

$tabs = new CAdminTabControl('pbxbridge_tabs', [
	['DIV' => 'settings', 'TAB' => Loc::getMessage('PBXBRIDGE_TAB'), 'TITLE' => Loc::getMessage('PBXBRIDGE_TAB_TITLE')],
]);
?>
<form method="post" action="<?= $h($APPLICATION->GetCurPage()) ?>?mid=<?= urlencode(Module::ID) ?>&amp;lang=<?= LANGUAGE_ID ?>">
<?= bitrix_sessid_post() ?>
<?php $tabs->Begin(); $tabs->BeginNextTab(); ?>
	<tr class="heading"><td colspan="2"><?= Loc::getMessage('PBXBRIDGE_WHERE') ?></td></tr>
	<tr>
		<td width="40%"><?= Loc::getMessage('PBXBRIDGE_URL') ?></td>
		<td><input type="text" size="50" name="pbxbridge_url" value="<?= $h($url) ?>" placeholder="https://pbx.example.ru"></td>
	</tr>
	<tr>
		<td><?= Loc::getMessage('PBXBRIDGE_DOMAIN') ?></td>
		<td><input type="text" size="50" name="portal_domain" value="<?= $h(Option::get(Module::ID, 'portal_domain', '')) ?>" placeholder="<?= $h(Module::domain()) ?>"></td>
	</tr>
	<tr>
		<td><?= Loc::getMessage('PBXBRIDGE_IPS') ?></td>
		<td><input type="text" size="50" name="allowed_ips" value="<?= $h(Option::get(Module::ID, 'allowed_ips', '')) ?>" placeholder="10.0.0.5"></td>
	</tr>
	<tr><td></td><td><input type="submit" name="save" value="<?= Loc::getMessage('PBXBRIDGE_SAVE') ?>" class="adm-btn-save"></td></tr>

	<tr class="heading"><td colspan="2"><?= Loc::getMessage('PBXBRIDGE_TOKEN') ?></td></tr>
	<tr><td><?= Loc::getMessage('PBXBRIDGE_TOKEN_NOW') ?></td><td><?= $h($tokenState) ?></td></tr>
	<tr>
		<td><?= Loc::getMessage('PBXBRIDGE_TOKEN_USER') ?></td>
		<td><input type="text" size="6" name="token_user_id" value="<?= $h(Option::get(Module::ID, 'token_user_id', (string)$USER->GetID())) ?>"></td>
	</tr>
	<tr>
		<td><?= Loc::getMessage('PBXBRIDGE_TOKEN_DAYS') ?></td>
		<td><input type="text" size="6" name="token_days" value="3650"></td>
	</tr>
	<tr><td></td><td>
		<input type="submit" name="issue_token" value="<?= Loc::getMessage('PBXBRIDGE_ISSUE') ?>">
		<input type="submit" name="revoke_token" value="<?= Loc::getMessage('PBXBRIDGE_REVOKE') ?>">
	</td></tr>

	<tr class="heading"><td colspan="2"><?= Loc::getMessage('PBXBRIDGE_FOR_PBXBRIDGE') ?></td></tr>
	<tr><td><?= Loc::getMessage('PBXBRIDGE_MEMBER_ID') ?></td><td><code><?= $h(\CRestUtil::getMemberId()) ?></code></td></tr>
	<tr><td><?= Loc::getMessage('PBXBRIDGE_SECRET') ?></td><td><code><?= $h(Module::secret()) ?></code>
		<input type="submit" name="new_secret" value="<?= Loc::getMessage('PBXBRIDGE_NEW_SECRET') ?>"></td></tr>
	<tr><td><?= Loc::getMessage('PBXBRIDGE_CONFIG') ?></td><td><pre><?= $h($yaml) ?></pre></td></tr>
<?php $tabs->End(); ?>
</form>
