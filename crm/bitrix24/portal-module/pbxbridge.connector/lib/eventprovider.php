<?php
namespace Pbxbridge\Connector;

use Bitrix\Main\Web\HttpClient;
use Bitrix\Rest\Event\ProviderInterface;
use Bitrix\Rest\Event\ProviderOAuth;
use Bitrix\Rest\Event\Sender;

/**
 * The event provider (rest:onEventManagerInitialize): events of the module's application are
 * posted straight to pbxbridge, signed (Signer), instead of through the cloud's queue; events of
 * other applications go on to the stock provider.
 *
 * Only handlers under the configured pbxbridge URL get events: a handler elsewhere (bound by
 * mistake) is skipped, so the module never signs anything for another host.
 */
class EventProvider extends ProviderOAuth implements ProviderInterface
{
	/**
	 * Our own: ProviderOAuth::instance() keeps its object in ProviderOAuth::$instance, so without
	 * this property EventProvider::instance() would hand out the stock provider whenever that was
	 * made first (and the stock one would then be ours).
	 *
	 * @var EventProvider|null
	 */
	protected static $instance = null;

	public static function onEventManagerInitialize()
	{
		Sender::setProvider(static::instance());
	}

	public function send(array $queryData)
	{
		$rest = [];
		foreach ($queryData as $item) {
			if (AuthProvider::instance()->checkClient(isset($item['client_id']) ? $item['client_id'] : '')) {
				$this->post($item);
			} else {
				$rest[] = $item;
			}
		}
		if ($rest) {
			parent::send($rest);
		}
	}

	private function post(array $item)
	{
		$url = isset($item['query']['QUERY_URL']) ? (string)$item['query']['QUERY_URL'] : '';
		$base = Module::pbxbridgeUrl();
		$secret = Module::secret();
		if ($base === '' || $secret === '' || strpos($url, $base . '/') !== 0) {
			AddMessage2Log('pbxbridge: event for ' . $url . ' not sent: the handler is not under the pbxbridge URL set on the module page', Module::ID);
			return;
		}
		$data = isset($item['query']['QUERY_DATA']) && is_array($item['query']['QUERY_DATA']) ? $item['query']['QUERY_DATA'] : [];
		// The cloud would add an access token; pbxbridge needs none (it calls the portal with its
		// own token) but the portal's identity.
		$data['auth'] = [
			'domain' => Module::domain(),
			'member_id' => \CRestUtil::getMemberId(),
			'client_endpoint' => \CRestUtil::getEndpoint(),
			'application_token' => isset($item['auth']['application_token']) ? $item['auth']['application_token'] : '',
		];
		$body = Signer::encode($data);
		// Posted inside the portal's request: keep it short (Bitrix24 warns that a slow handler
		// slows the portal).
		$http = new HttpClient(['socketTimeout' => 3, 'streamTimeout' => 5, 'redirect' => false]);
		foreach (Signer::headers($secret, $body) as $name => $value) {
			$http->setHeader($name, $value);
		}
		$http->setHeader('Content-Type', 'application/x-www-form-urlencoded');
		if ($http->post($url, $body) === false || $http->getStatus() >= 300) {
			AddMessage2Log('pbxbridge: posting ' . (isset($data['event']) ? $data['event'] : 'an event') . ' to ' . $url . ' failed: HTTP ' . $http->getStatus() . ' ' . implode('; ', $http->getError()), Module::ID);
		}
	}
}
