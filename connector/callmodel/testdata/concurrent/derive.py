#!/usr/bin/env python3
"""Derive concurrent/expected.jsonl from asterisk/transcripts/concurrent.meta.json.

The 20 calls of the concurrent scenario are all the same shape (customer -> DID -> one
extension, answered or given up on), so their expected records are derived from the meta file
with the conventions of ../README.md instead of being typed by hand. This script reads only the
meta file (what the lab driver recorded), never the call model's output.

    python3 derive.py ../../../../asterisk/transcripts/concurrent.meta.json > expected.jsonl
"""
import datetime
import json
import sys
from decimal import Decimal


def T(s):
    sec, _, frac = repr(s).partition('.') if isinstance(s, float) else str(s).partition('.')
    out = datetime.datetime.fromtimestamp(int(sec), datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%S')
    frac = frac.rstrip('0')
    return out + ('.' + frac if frac else '') + 'Z'


def R(d):  # whole seconds, half up
    return 0 if d <= 0 else int((d + Decimal('0.5')) // 1)


def dec(x):
    return Decimal(repr(x))


def e164_ru(n):
    """The lab's caller IDs are Russian mobile numbers written +7XXXXXXXXXX, 8XXXXXXXXXX or
    7XXXXXXXXXX; with default region RU all three mean +7XXXXXXXXXX."""
    d = n.lstrip('+')
    if len(d) == 11 and d[0] in '78':
        return '+7' + d[1:]
    return n


meta = json.load(open(sys.argv[1]))
out = []
for c in meta['calls']:
    chans = {ch['name']: ch for ch in c['channels']}
    first = min(c['channels'], key=lambda ch: ch['created'])
    trunk = next(ch for ch in c['channels'] if '@from-pstn-' in ch['name'] and ch['name'].endswith(';2'))
    customer = next(ch for ch in c['channels'] if '@from-pstn-' in ch['name'] and ch['name'].endswith(';1'))
    started = dec(first['created'])
    ended = max(dec(ch['hungup']) for ch in c['channels'])
    ext_dials = [d for d in c['dials'] if '@phones-' in d['to']]
    rang = []
    for d in sorted(ext_dials, key=lambda d: d['begin']):
        ext = d['to'].split('/')[1].split('@')[0]
        if ext not in rang:
            rang.append(ext)
    answered = [d for d in ext_dials if d['status'] == 'ANSWER']
    rec = {
        'call_id': c['linkedid'], 'direction': 'inbound', 'customer': e164_ru(c['caller']), 'line': c['did'],
        'started_at': T(first['created']), 'answered_at': None, 'ended_at': None,
        'disposition': 'no_answer', 'answered_by': '', 'rang': rang,
        'ring_seconds': 0, 'talk_seconds': 0, 'legs': [], 'transfers': [], 'recording': '',
    }
    # ended_at: the last hangup of the call's channels
    last = max(c['channels'], key=lambda ch: ch['hungup'])
    rec['ended_at'] = T(last['hungup'])
    if answered:
        d = answered[0]
        ext = d['to'].split('/')[1].split('@')[0]
        a = dec(d['end'])
        leg_end = dec(customer['hungup'])  # the customer hangs up
        rec.update(answered_at=T(d['end']), disposition='answered', answered_by=ext,
                   ring_seconds=R(a - started), talk_seconds=R(ended - a),
                   legs=[{'ext': ext, 'answered_at': T(d['end']), 'ended_at': T(customer['hungup']),
                          'talk_seconds': R(leg_end - a)}],
                   recording=c['recordings'][0])
    else:
        rec['ring_seconds'] = R(ended - started)
    cause = int(trunk['hangup_cause'])
    if cause == 0:
        for ch in sorted(c['channels'], key=lambda ch: ch['hungup']):
            if int(ch['hangup_cause']):
                cause = int(ch['hangup_cause'])
                break
    if cause:
        rec['hangup_cause'] = cause
    # The trunk: the trunk leg's channel name without its unique suffix.
    rec['trunk'] = trunk['name'].rsplit(';', 1)[0].rsplit('-', 1)[0]
    out.append(rec)

out.sort(key=lambda r: (r['started_at'], r['call_id']))
for r in out:
    print(json.dumps(r, separators=(',', ':')))
