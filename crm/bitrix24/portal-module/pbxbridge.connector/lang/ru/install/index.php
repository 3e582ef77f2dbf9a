<?php
$MESS['PBXBRIDGE_MODULE_NAME'] = 'pbxbridge: телефония без облака Битрикс24';
$MESS['PBXBRIDGE_MODULE_DESCRIPTION'] = 'Выдаёт pbxbridge долгоживущий токен приложения и отправляет ему события click-to-call напрямую, чтобы изолированная коробка Битрикс24 работала с pbxbridge без облачного OAuth-сервера.';
$MESS['PBXBRIDGE_NEEDS_REST'] = 'Сначала установите модуль REST (rest).';
$MESS['PBXBRIDGE_NEEDS_PHP'] = 'Модулю нужен PHP 7.4 или новее.';
