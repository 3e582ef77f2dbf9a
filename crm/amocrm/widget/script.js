// pbxbridge click-to-call widget for amoCRM and Kommo.
//
// When the user clicks a phone number (cards and lists), the widget POSTs
//   {"phone": "<number>", "entity_type": "contacts", "entity_id": 3, "account": "<subdomain>"}
// to <server_url>/click2call through self.$authorizedAjax, which adds the platform's one-time
// token (X-Auth-Token: a JWT naming the user who clicked, signed by amoCRM/Kommo with the
// integration's secret key). That token is the only thing pbxbridge trusts to know who clicked:
// the widget holds no secret of its own (anything in the widget's settings reaches every user's
// browser). pbxbridge answers {"ok": bool, "message": "..."} in plain words.
define([], function () {
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
      if (typeof self.$authorizedAjax !== 'function') {
        notify(t('messages.no_token'));
        return;
      }
      var account = constant('account') || {};
      var entity = currentEntity();
      var data = { phone: String(phone), account: account.subdomain || '' };
      // pbxbridge takes these entity types only (the card the click came from; informative).
      if (['contacts', 'leads', 'companies', 'customers'].indexOf(entity.type) >= 0 && Number(entity.id) > 0) {
        data.entity_type = entity.type;
        data.entity_id = Number(entity.id);
      }
      self.$authorizedAjax({
        url: settings.server_url.replace(/\/+$/, '') + '/click2call',
        method: 'POST',
        data: JSON.stringify(data),
        contentType: 'application/json',
        dataType: 'json'
      }).done(done).fail(fail);
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
