<?php
// Minimal stand-ins for the Bitrix24 core classes the module uses, so that its logic runs under
// plain php-cli (run.php). They copy the behaviour the module relies on from the core's source
// (rest/lib/oauth/auth.php: onRestCheckAuth; rest/lib/app.php: setSkipRemoteUpdate); they are
// no substitute for a real box.

namespace Bitrix\Main {
	class SystemException extends \Exception {}
	class NotImplementedException extends SystemException {}
	class ObjectNotFoundException extends SystemException {}
	class Loader
	{
		public static function registerAutoLoadClasses($module, array $classes)
		{
			spl_autoload_register(function ($class) use ($classes) {
				foreach ($classes as $name => $file) {
					if (ltrim($name, '\\') === $class) {
						require_once MODULE_DIR . '/' . $file;
					}
				}
			});
		}
		public static function includeModule($m) { return true; }
	}
	class Result
	{
		public $errors = [];
		public $id;
		public function isSuccess() { return !$this->errors; }
		public function getErrorMessages() { return $this->errors; }
	}
	class Context
	{
		public static function getCurrent() { return new self(); }
		public function getServer() { return new class {
			public function getHttpHost() { return 'b24.example.ru'; }
			public function getRemoteAddr() { return $GLOBALS['REMOTE_ADDR'] ?? '10.0.0.5'; }
		}; }
	}
}

namespace Bitrix\Main\Config {
	class Option
	{
		public static $o = [];
		public static function get($m, $n, $d = '') { return self::$o[$m][$n] ?? $d; }
		public static function set($m, $n, $v) { self::$o[$m][$n] = (string)$v; }
		public static function delete($m, array $f = []) {
			if (isset($f['name'])) { unset(self::$o[$m][$f['name']]); } else { unset(self::$o[$m]); }
		}
		public static function getForModule($m) { return self::$o[$m] ?? []; }
	}
}

namespace Bitrix\Main\Security {
	class Random
	{
		public static function getString($n, $caseSensitive = false)
		{
			$s = bin2hex(random_bytes($n));
			return substr($caseSensitive ? $s : strtolower($s), 0, $n);
		}
	}
}

namespace Bitrix\Main\Web {
	class HttpClient
	{
		public static $posts = [];
		private $headers = [];
		public function __construct(array $o = []) {}
		public function setHeader($n, $v) { $this->headers[$n] = $v; }
		public function post($url, $body)
		{
			self::$posts[] = ['url' => $url, 'body' => $body, 'headers' => $this->headers];
			return 'ok';
		}
		public function getStatus() { return 200; }
		public function getError() { return []; }
	}
}

namespace Bitrix\Rest {
	interface AuthStorageInterface
	{
		public function store(array $authResult);
		public function rewrite(array $authResult);
		public function restore($accessToken);
	}
	interface AuthProviderInterface
	{
		public function get($clientId, $scope, $additionalParams, $userId);
		public function authorizeClient($clientId, $userId, $state = '');
	}
	class Application
	{
		public static $provider;
		public static function setAuthProvider($p) { self::$provider = $p; }
	}
	class AppTable
	{
		const STATUS_LOCAL = 'L';
		const ACTIVE = 'Y';
		const INSTALLED = 'Y';
		public static $rows = [];
		public static $skip = false;
		public static $remoteCalls = 0;
		public static function setSkipRemoteUpdate($v) { self::$skip = $v; }
		public static function add(array $f)
		{
			if (!self::$skip) { self::$remoteCalls++; } // the core would call the cloud here
			$r = new \Bitrix\Main\Result();
			$r->id = count(self::$rows) + 1;
			self::$rows[$r->id] = $f + ['ID' => $r->id];
			return $r;
		}
		public static function update($id, array $f)
		{
			if (!self::$skip) { self::$remoteCalls++; }
			self::$rows[$id] = $f + self::$rows[$id];
			return new \Bitrix\Main\Result();
		}
		public static function delete($id)
		{
			if (!self::$skip) { self::$remoteCalls++; }
			unset(self::$rows[$id]);
			return new \Bitrix\Main\Result();
		}
		public static function getByClientId($id)
		{
			foreach (self::$rows as $r) {
				if ($r['CLIENT_ID'] === $id || $r['CODE'] === $id || (string)$r['ID'] === (string)$id) { return $r; }
			}
			return null;
		}
	}
}

namespace Bitrix\Rest\OAuth {
	class Provider
	{
		public function get($clientId, $scope, $additionalParams, $userId) { return ['error' => 'cloud', 'error_description' => 'the cloud is unreachable']; }
		public function authorizeClient($clientId, $userId, $state = '') { return false; }
	}
	class Auth
	{
		const AUTH_TYPE = 'oauth';
		protected static $authQueryParams = ['auth', 'access_token'];
		// As in the core (rest/lib/oauth/auth.php), without the parts the module does not reach.
		public static function onRestCheckAuth(array $query, $scope, &$res)
		{
			$authKey = null;
			foreach (static::$authQueryParams as $key) {
				if (array_key_exists($key, $query) && !is_array($query[$key])) { $authKey = $query[$key]; break; }
			}
			if (!$authKey) { return null; }
			$tokenInfo = static::check($authKey);
			if (!is_array($tokenInfo)) { return false; }
			$error = array_key_exists('error', $tokenInfo);
			if (!$error && !array_key_exists('client_id', $tokenInfo)) {
				$tokenInfo = ['error' => 'CONNECTION_ERROR', 'error_description' => 'Error connecting to authorization server'];
				$error = true;
			}
			if (!$error) {
				$clientInfo = \Bitrix\Rest\AppTable::getByClientId($tokenInfo['client_id']);
				if (array_key_exists('status', $tokenInfo)) { $tokenInfo['status_touched'] = true; }
				if (!is_array($clientInfo) || $clientInfo['ACTIVE'] !== 'Y') {
					$tokenInfo = ['error' => 'APPLICATION_NOT_FOUND', 'error_description' => 'Application not found'];
					$error = true;
				}
			}
			if (!$error && $tokenInfo['expires'] <= time()) {
				$tokenInfo = ['error' => 'expired_token', 'error_description' => 'The access token provided has expired'];
				$error = true;
			}
			if (!$error && $scope !== 'global' && isset($tokenInfo['scope']) && !in_array($scope, explode(',', $tokenInfo['scope']))) {
				$tokenInfo = ['error' => 'insufficient_scope', 'error_description' => 'The request requires higher privileges than provided by the access token'];
				$error = true;
			}
			$res = $tokenInfo;
			$res['auth_type'] = static::AUTH_TYPE;
			return !$error;
		}
		protected static function check($accessToken) { return ['error' => 'cloud', 'error_description' => 'the cloud is unreachable']; }
	}
}

namespace Bitrix\Rest\Event {
	interface ProviderInterface { public function send(array $queryData); }
	class ProviderOAuth implements ProviderInterface
	{
		public static $sent = [];
		// As in the core (rest/lib/event/provideroauth.php): one static property for the class
		// and every subclass that does not declare its own.
		protected static $instance = null;
		public static function instance()
		{
			if (static::$instance === null) { static::$instance = new static(); }
			return static::$instance;
		}
		public function send(array $queryData) { self::$sent = array_merge(self::$sent, $queryData); }
	}
	class Sender
	{
		public static $provider;
		public static function setProvider($p) { self::$provider = $p; }
	}
}

namespace {
	class CRestUtil
	{
		public static function getEndpoint() { return 'https://b24.example.ru/rest/'; }
		public static function getMemberId() { return 'a223c6b3710f85df22e9377d6c4f7553'; }
		public static function cleanApp($id, $clean) {}
	}
	function AddMessage2Log($m, $module = '') { $GLOBALS['LOG'][] = $m; }
}
