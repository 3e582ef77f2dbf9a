// pbxbridge click-to-call widget for amoCRM and Kommo.
//
// When the user clicks a phone number (cards and lists), the widget POSTs
//   {"user_id": <current user>, "phone": "<number>", "entity_type": "contacts", "entity_id": 3, "account": "<subdomain>"}
// to <server_url>/click2call. The request is authenticated either with the HMAC secret from the
// widget's settings (headers X-Pbxbridge-Timestamp and X-Pbxbridge-Signature =
// hex(HMAC-SHA256(secret, timestamp + "." + body))) or, when no secret is set, with the
// platform's one-time token (self.$authorizedAjax adds X-Auth-Token, signed with the
// integration's secret key). pbxbridge answers {"ok": bool, "message": "..."} in plain words.
define(['jquery'], function ($) {
  'use strict';

  return function () {
    var self = this;

    function t(path) {
      var parts = path.split('.');
      var v = self.i18n(parts[0]) || {};
      return v[parts[1]] || path;
    }

    function notify(text) {
      var n = { header: t('widget.name'), text: text };
      try {
        AMOCRM.notifications.show_message(n);
      } catch (e) {
        window.alert(text);
      }
    }

    function constant(name) {
      try {
        return APP.constant(name);
      } catch (e) {
        try {
          return AMOCRM.constant(name);
        } catch (e2) {
          return null;
        }
      }
    }

    function currentEntity() {
      try {
        var d = AMOCRM.data;
        if (d && d.current_card && d.current_entity) {
          return { type: d.current_entity, id: d.current_card.id };
        }
      } catch (e) {
        // lists have no current card
      }
      return { type: '', id: 0 };
    }

    function hex(buffer) {
      return Array.prototype.map.call(new Uint8Array(buffer), function (b) {
        return ('0' + b.toString(16)).slice(-2);
      }).join('');
    }

    function sign(secret, timestamp, body) {
      var enc = new TextEncoder();
      return window.crypto.subtle
        .importKey('raw', enc.encode(secret), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign'])
        .then(function (key) {
          return window.crypto.subtle.sign('HMAC', key, enc.encode(timestamp + '.' + body));
        })
        .then(hex);
    }

    function done(answer) {
      notify((answer && answer.message) || t('messages.calling').replace('%s', ''));
    }

    function fail(xhr) {
      var answer = xhr && xhr.responseJSON;
      notify((answer && answer.message) || t('messages.network'));
    }

    function call(phone) {
      var settings = self.get_settings() || {};
      if (!settings.server_url) {
        notify(t('messages.not_configured'));
        return;
      }
      var user = constant('user') || {};
      var account = constant('account') || {};
      var entity = currentEntity();
      var body = JSON.stringify({
        user_id: Number(user.id) || 0,
        phone: String(phone),
        entity_type: entity.type,
        entity_id: Number(entity.id) || 0,
        account: account.subdomain || ''
      });
      var url = settings.server_url.replace(/\/+$/, '') + '/click2call';
      var request = { url: url, method: 'POST', data: body, contentType: 'application/json', dataType: 'json' };

      if (!settings.secret && typeof self.$authorizedAjax === 'function') {
        self.$authorizedAjax(request).done(done).fail(fail);
        return;
      }
      if (!window.crypto || !window.crypto.subtle) {
        notify(t('messages.no_crypto'));
        return;
      }
      var timestamp = String(Math.floor(Date.now() / 1000));
      sign(settings.secret || '', timestamp, body).then(function (signature) {
        request.headers = { 'X-Pbxbridge-Timestamp': timestamp, 'X-Pbxbridge-Signature': signature };
        $.ajax(request).done(done).fail(fail);
      });
    }

    this.callbacks = {
      render: function () {
        return true;
      },
      init: function () {
        // Called by amoCRM/Kommo when the user clicks a phone number; params.value is the number.
        self.add_action('phone', function (params) {
          call(params.value);
        });
        return true;
      },
      bind_actions: function () {
        return true;
      },
      settings: function () {
        return true;
      },
      onSave: function () {
        return true;
      },
      destroy: function () {}
    };
    return this;
  };
});
