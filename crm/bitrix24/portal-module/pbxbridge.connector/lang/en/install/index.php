<?php
$MESS['PBXBRIDGE_MODULE_NAME'] = 'pbxbridge: telephony without the Bitrix24 cloud';
$MESS['PBXBRIDGE_MODULE_DESCRIPTION'] = 'Issues pbxbridge a long-lived application token and sends it the click-to-call events directly, so an isolated on-premise Bitrix24 works with pbxbridge without the cloud OAuth server.';
$MESS['PBXBRIDGE_NEEDS_REST'] = 'The REST module (rest) must be installed first.';
$MESS['PBXBRIDGE_NEEDS_PHP'] = 'The module needs PHP 7.4 or newer.';
