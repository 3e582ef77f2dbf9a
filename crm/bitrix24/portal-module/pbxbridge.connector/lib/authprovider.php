<?php
namespace Pbxbridge\Connector;

use Bitrix\Main\Context;
use Bitrix\Main\NotImplementedException;
use Bitrix\Main\ObjectNotFoundException;
use Bitrix\Main\Security\Random;
use Bitrix\Rest\Application;
use Bitrix\Rest\AppTable;
use Bitrix\Rest\AuthProviderInterface;
use Bitrix\Rest\AuthStorageInterface;
use Bitrix\Rest\OAuth\Provider;

/**
 * The authorisation provider of the module's application (Bitrix24's "Application
 * authorization in an isolated Bitrix24 box"): tokens of this application are made here,
 * without the cloud OAuth server; every other application's go to the stock provider.
 */
class AuthProvider extends Provider implements AuthProviderInterface
{
	/** Lifetime of the tokens Bitrix24 itself asks for (events with authorisation, …). */
	const TOKEN_TTL = 3600;

	/** @var AuthProvider|null */
	protected static $instance = null;

	/** @var string[] */
	protected $applicationList = [];

	/** @var AuthStorageInterface|null */
	protected $storage = null;

	/**
	 * @return static
	 */
	public static function instance()
	{
		if (static::$instance === null) {
			static::$instance = new static();
		}
		return static::$instance;
	}

	/**
	 * rest:onApplicationManagerInitialize
	 */
	public static function onApplicationManagerInitialize()
	{
		Application::setAuthProvider(static::instance());
	}

	public function get($clientId, $scope, $additionalParams, $userId)
	{
		if (!$this->checkClient($clientId)) {
			return parent::get($clientId, $scope, $additionalParams, $userId);
		}
		if ($userId <= 0) {
			return false;
		}
		$app = AppTable::getByClientId($clientId);
		if (!$app) {
			return ['error' => 'APPLICATION_NOT_FOUND', 'error_description' => 'The pbxbridge application is not installed'];
		}
		return $this->issue($clientId, (int)$userId, static::TOKEN_TTL, $app['SCOPE']);
	}

	/**
	 * Issues a token of the module's application for a user, valid for $ttl seconds, and stores it.
	 *
	 * @return array the authorisation, as Bitrix24's OAuth server would give it
	 */
	public function issue($clientId, $userId, $ttl, $scope)
	{
		$auth = [
			'access_token' => Module::TOKEN_PREFIX . Random::getString(48, true),
			'user_id' => (int)$userId,
			'client_id' => $clientId,
			'expires' => time() + (int)$ttl,
			'expires_in' => (int)$ttl,
			'scope' => $scope,
			'domain' => Context::getCurrent()->getServer()->getHttpHost(),
			'status' => AppTable::STATUS_LOCAL,
			'client_endpoint' => \CRestUtil::getEndpoint(),
			'member_id' => \CRestUtil::getMemberId(),
		];
		$this->getStorage()->store($auth);
		return $auth;
	}

	public function authorizeClient($clientId, $userId, $state = '')
	{
		if (!$this->checkClient($clientId)) {
			return parent::authorizeClient($clientId, $userId, $state);
		}
		throw new NotImplementedException('The pbxbridge application has no OAuth authorisation: its token is issued on the module settings page');
	}

	public function checkClient($clientId)
	{
		return $clientId !== '' && in_array($clientId, $this->applicationList, true);
	}

	public function checkToken($token)
	{
		return is_string($token) && strpos($token, Module::TOKEN_PREFIX) === 0;
	}

	/**
	 * @return AuthStorageInterface
	 * @throws ObjectNotFoundException
	 */
	public function getStorage()
	{
		if ($this->storage === null) {
			throw new ObjectNotFoundException('No token storage set. Use ' . __CLASS__ . '::instance()->setStorage().');
		}
		return $this->storage;
	}

	/**
	 * @return static
	 */
	public function setStorage(AuthStorageInterface $storage)
	{
		$this->storage = $storage;
		return $this;
	}

	/**
	 * @return static
	 */
	public function addApplication($clientId)
	{
		if ($clientId !== '' && !in_array($clientId, $this->applicationList, true)) {
			$this->applicationList[] = $clientId;
		}
		return $this;
	}
}
