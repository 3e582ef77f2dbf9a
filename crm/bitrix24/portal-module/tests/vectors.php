<?php
// Encodes and signs the events of a vector file with the module's Signer and prints what it made
// as JSON, for crm/bitrix24/module_php_test.go to compare with the file (and with pbxbridge's
// check of the same vectors, which runs without PHP).
//
//   php vectors.php ../../testdata/module-signature-vectors.json

require dirname(__DIR__) . '/pbxbridge.connector/lib/signer.php';

use Pbxbridge\Connector\Signer;

$in = json_decode(file_get_contents($argv[1]), true);
if (!is_array($in) || !isset($in['vectors'])) {
	fwrite(STDERR, "vectors.php: {$argv[1]} is not a vector file\n");
	exit(2);
}
$out = [];
foreach ($in['vectors'] as $v) {
	$body = Signer::encode($v['event']);
	$h = Signer::headers($v['secret'], $body, (int)$v['timestamp']);
	$out[] = [
		'name' => $v['name'],
		'body' => $body,
		'timestamp' => $h[Signer::TIMESTAMP_HEADER],
		'signature' => $h[Signer::SIGNATURE_HEADER],
	];
}
echo json_encode($out, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_PRETTY_PRINT), "\n";
