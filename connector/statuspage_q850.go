package connector

import "strconv"

// q850 names the ITU-T Q.850 cause values Asterisk reports as a channel's hangup cause
// (HANGUPCAUSE, the Cause field of AMI Hangup events), in both status page languages.
var q850 = map[int]msg{
	1:   {"unallocated number", "номер не существует"},
	2:   {"no route to the transit network", "нет маршрута к транзитной сети"},
	3:   {"no route to destination", "нет маршрута к адресату"},
	6:   {"channel unacceptable", "канал неприемлем"},
	7:   {"call awarded, delivered in an established channel", "вызов передан в установленный канал"},
	16:  {"normal call clearing", "нормальное завершение"},
	17:  {"user busy", "абонент занят"},
	18:  {"no user responding", "абонент не отвечает"},
	19:  {"no answer (user alerted)", "нет ответа (вызов подан)"},
	20:  {"subscriber absent", "абонент недоступен"},
	21:  {"call rejected", "вызов отклонён"},
	22:  {"number changed", "номер изменён"},
	26:  {"answered elsewhere", "ответили на другом аппарате"},
	27:  {"destination out of order", "аппарат адресата не работает"},
	28:  {"invalid number format (incomplete number)", "неверный формат номера (номер неполный)"},
	29:  {"facility rejected", "услуга отклонена"},
	30:  {"response to status enquiry", "ответ на запрос состояния"},
	31:  {"normal, unspecified", "нормальное завершение, без уточнения"},
	34:  {"no circuit available", "нет свободного канала"},
	38:  {"network out of order", "сеть не работает"},
	41:  {"temporary failure", "временный сбой"},
	42:  {"switching equipment congestion", "перегрузка коммутационного оборудования"},
	43:  {"access information discarded", "информация доступа отброшена"},
	44:  {"requested circuit not available", "запрошенный канал недоступен"},
	47:  {"resource unavailable", "ресурс недоступен"},
	49:  {"quality of service not available", "качество обслуживания недоступно"},
	50:  {"requested facility not subscribed", "услуга не подключена"},
	52:  {"outgoing calls barred", "исходящие вызовы запрещены"},
	54:  {"incoming calls barred", "входящие вызовы запрещены"},
	57:  {"bearer capability not authorised", "тип соединения не разрешён"},
	58:  {"bearer capability not presently available", "тип соединения сейчас недоступен"},
	63:  {"service or option not available", "услуга недоступна"},
	65:  {"bearer capability not implemented", "тип соединения не поддерживается"},
	66:  {"channel type not implemented", "тип канала не поддерживается"},
	69:  {"requested facility not implemented", "услуга не реализована"},
	79:  {"service or option not implemented", "услуга не реализована"},
	81:  {"invalid call reference value", "неверный идентификатор вызова"},
	88:  {"incompatible destination", "несовместимый адресат"},
	95:  {"invalid message", "неверное сообщение"},
	96:  {"mandatory information element missing", "нет обязательного элемента сообщения"},
	97:  {"message type not implemented", "тип сообщения не поддерживается"},
	98:  {"message not compatible with call state", "сообщение не соответствует состоянию вызова"},
	99:  {"information element not implemented", "элемент сообщения не поддерживается"},
	100: {"invalid information element contents", "неверное содержимое элемента сообщения"},
	101: {"message not compatible with call state", "сообщение не соответствует состоянию вызова"},
	102: {"recovery on timer expiry", "истёк таймер"},
	103: {"parameter not implemented", "параметр не поддерживается"},
	111: {"protocol error", "ошибка протокола"},
	127: {"interworking, unspecified", "ошибка взаимодействия сетей"},
}

// hangupCause is a Q.850 cause in words: "34 — no circuit available"; an unknown value is
// shown as its number; 0 (not reported) as "".
func (l lang) hangupCause(cause int) string {
	if cause == 0 {
		return ""
	}
	n := strconv.Itoa(cause)
	if m, ok := q850[cause]; ok {
		return n + " — " + m.in(l)
	}
	return n + " — " + l.T("cause.unknown")
}
