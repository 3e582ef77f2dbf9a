<?php
// pbxbridge portal module: see crm/bitrix24/portal-module/README.md in the pbxbridge sources.
$arModuleVersion = [
	'VERSION' => '1.0.0',
	'VERSION_DATE' => '2026-12-07 00:00:00',
];
