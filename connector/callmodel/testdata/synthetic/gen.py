#!/usr/bin/env python3
"""Write the synthetic AMI transcripts of testdata/synthetic/<name>/events.ami.

These are not recordings. Each scenario below is a hand-written script of the AMI events a
production PBX (PJSIP phones `PJSIP/101-…`, a PJSIP trunk peer `PJSIP/provider-…`, FreePBX
contexts) emits for a call, derived from the real Asterisk 22 lab transcripts: same event
types, header sets and order, with the Local-channel simulation removed (the lab's
`Local/101@phones-…;1` becomes `PJSIP/101-…`, the lab's `Local/…@from-pstn-…;2` becomes
`PJSIP/provider-…` in `from-pstn`) and the FreePBX dialplan steps (ext-did, macro-dial-one,
ext-queues, from-queue, outrt, ext-group, VoiceMail) in place of the lab's. Events the call
model does not use (CEL, DeviceStateChange, most Newexten/VarSet) are kept to a realistic few.

They are replayed with the DEFAULT options (no configuration), see ../README.md.

    python3 gen.py        # rewrites */events.ami
"""
import os

HERE = os.path.dirname(os.path.abspath(__file__))
STATE_DESC = {0: 'Down', 4: 'Ring', 5: 'Ringing', 6: 'Up'}


class Chan:
    def __init__(self, pbx, name, uid, linkedid, state, cid, cidname, context, exten):
        self.pbx, self.name, self.uid, self.linkedid = pbx, name, uid, linkedid
        self.state, self.cid, self.cidname = state, cid, cidname
        self.conn, self.connname = '<unknown>', '<unknown>'
        self.context, self.exten, self.priority = context, exten, 1

    def headers(self, p=''):
        return [
            (p + 'Channel', self.name), (p + 'ChannelState', str(self.state)),
            (p + 'ChannelStateDesc', STATE_DESC.get(self.state, 'Unknown')),
            (p + 'CallerIDNum', self.cid), (p + 'CallerIDName', self.cidname),
            (p + 'ConnectedLineNum', self.conn), (p + 'ConnectedLineName', self.connname),
            (p + 'Language', 'en'), (p + 'AccountCode', ''), (p + 'Context', self.context),
            (p + 'Exten', self.exten), (p + 'Priority', str(self.priority)),
            (p + 'Uniqueid', self.uid), (p + 'Linkedid', self.linkedid),
        ]


class PBX:
    def __init__(self, t0, seq=0, epoch=None):
        self.t = t0
        self.epoch = epoch or int(t0)
        self.seq = seq
        self.chanseq = 0
        self.bridgeseq = 0
        self.out = ['Asterisk Call Manager/11.0.0', 'Response: Success', 'Message: Authentication accepted', '',
                    'Event: FullyBooted', 'Privilege: system,all', 'Uptime: 3600', 'LastReload: 3600',
                    'Status: Fully Booted', '']

    def at(self, dt):
        self.t += dt
        return self

    def event(self, name, fields, priv='call,all'):
        self.t += 0.000050
        self.out.append('Event: ' + name)
        self.out.append('Privilege: ' + priv)
        self.out.append('Timestamp: %.6f' % self.t)
        for k, v in fields:
            self.out.append('%s: %s' % (k, v))
        self.out.append('')

    def new_channel(self, tech_peer, state, cid, cidname, context, exten, linkedid=None, name=None):
        """Newchannel for tech_peer-<seq> (or the given full name)."""
        uid = '%d.%d' % (self.epoch, self.seq)
        self.seq += 1
        self.chanseq += 1
        name = name or '%s-%08x' % (tech_peer, self.chanseq)
        ch = Chan(self, name, uid, linkedid or uid, state, cid, cidname, context, exten)
        self.event('Newchannel', ch.headers())
        return ch

    def new_local(self, base, cid, context, exten, linkedid):
        """A Local channel pair Local/<base>-<seq>;1 (dialled, Down) and ;2 (runs dialplan, Ring)."""
        self.chanseq += 1
        name = 'Local/%s-%08x' % (base, self.chanseq)
        one = self.new_channel('', 0, cid, '<unknown>', context, exten, linkedid, name + ';1')
        two = self.new_channel('', 4, cid, '<unknown>', context, exten, linkedid, name + ';2')
        self.event('LocalBridge', one.headers('LocalOne') + two.headers('LocalTwo') + [
            ('Context', context), ('Exten', exten), ('LocalOptimization', 'No')])
        return one, two

    def newexten(self, ch, context, exten, app, data=''):
        ch.context, ch.exten = context, exten
        ch.priority += 1
        self.event('Newexten', ch.headers() + [('Extension', exten), ('Application', app), ('AppData', data)],
                   'dialplan,all')

    def varset(self, ch, var, value):
        self.event('VarSet', ch.headers() + [('Variable', var), ('Value', value)], 'dialplan,all')

    def state(self, ch, st):
        ch.state = st
        self.event('Newstate', ch.headers())

    def connected(self, ch, num, name='<unknown>'):
        ch.conn, ch.connname = num, name
        self.event('NewConnectedLine', ch.headers())

    def callerid(self, ch, num, name='<unknown>'):
        ch.cid, ch.cidname = num, name
        self.event('NewCallerid', ch.headers() + [('CID-CallingPres', '0 (Presentation Allowed, Not Screened)')])

    def dial_begin(self, caller, dest, dialstring):
        f = (caller.headers() if caller else []) + dest.headers('Dest') + [('DialString', dialstring)]
        self.event('DialBegin', f)

    def dial_state(self, caller, dest, status='RINGING'):
        f = (caller.headers() if caller else []) + dest.headers('Dest') + [('DialStatus', status)]
        self.event('DialState', f)

    def dial_end(self, caller, dest, status):
        f = (caller.headers() if caller else []) + dest.headers('Dest') + [('DialStatus', status)]
        self.event('DialEnd', f)

    def bridge_create(self, typ='basic'):
        self.bridgeseq += 1
        bid = '5e1f0c2a-0000-4000-8000-%012x' % (self.epoch * 100 + self.bridgeseq)
        self.bridges = getattr(self, 'bridges', {})
        self.bridges[bid] = [typ, 0]
        self.event('BridgeCreate', self.bridge_headers(bid))
        return bid

    def bridge_headers(self, bid, p=''):
        typ, n = self.bridges[bid]
        return [(p + 'BridgeUniqueid', bid), (p + 'BridgeType', typ), (p + 'BridgeTechnology', 'simple_bridge'),
                (p + 'BridgeCreator', '<unknown>'), (p + 'BridgeName', '<unknown>'),
                (p + 'BridgeNumChannels', str(n)), (p + 'BridgeVideoSourceMode', 'none')]

    def bridge_enter(self, bid, ch, swap=None):
        self.bridges[bid][1] += 1
        f = self.bridge_headers(bid) + ch.headers()
        if swap:
            f.append(('SwapUniqueid', swap.uid))
        self.event('BridgeEnter', f)

    def bridge_leave(self, bid, ch):
        self.bridges[bid][1] -= 1
        self.event('BridgeLeave', self.bridge_headers(bid) + ch.headers())

    def bridge_destroy(self, bid):
        self.event('BridgeDestroy', self.bridge_headers(bid))

    def hangup(self, ch, cause, text):
        self.event('HangupRequest', ch.headers() + [('Cause', str(cause))])
        self.event('Hangup', ch.headers() + [('Cause', str(cause)), ('Cause-txt', text)])

    def cdr(self, ch, dst, dcontext, dstchan, lastapp, lastdata, disp, dur, bill, rec=''):
        self.event('Cdr', [('AccountCode', ''), ('Source', ch.cid), ('Destination', dst),
                           ('DestinationContext', dcontext), ('CallerID', '"%s" <%s>' % ('', ch.cid)),
                           ('Channel', ch.name), ('DestinationChannel', dstchan), ('LastApplication', lastapp),
                           ('LastData', lastdata), ('StartTime', ''), ('AnswerTime', ''), ('EndTime', ''),
                           ('Duration', str(dur)), ('BillableSeconds', str(bill)), ('Disposition', disp),
                           ('AMAFlags', 'DOCUMENTATION'), ('UniqueID', ch.uid), ('UserField', ''),
                           ('RecordingFile', rec)], 'cdr,all')

    def write(self, name):
        d = os.path.join(HERE, name)
        os.makedirs(d, exist_ok=True)
        self.out += ['Response: Goodbye', 'Message: Thanks for all the fish.', '']
        with open(os.path.join(d, 'events.ami'), 'w', newline='') as f:
            f.write('\r\n'.join(self.out) + '\r\n')


REC = '/var/spool/asterisk/monitor/2026/11/22/'


def inbound_start(p, did, cid, name='<unknown>'):
    """A call arriving on the provider trunk into FreePBX's from-pstn, through ext-did."""
    trunk = p.new_channel('PJSIP/provider', 4, cid, name, 'from-pstn', did)
    p.newexten(trunk, 'from-pstn', did, 'Set', '__FROM_DID=' + did)
    p.varset(trunk, '__FROM_DID', did)
    p.newexten(trunk, 'ext-did-0002', did, 'Goto', 'from-did-direct,101,1')
    return trunk


def record(p, ch, fname):
    p.newexten(ch, 'sub-record-check', 's', 'MixMonitor', fname + ',ai(LOCAL_MIXMON_ID)')
    p.varset(ch, 'MIXMONITOR_FILENAME', REC + fname)
    p.event('MixMonitorStart', ch.headers())


def device(p, caller, ext, context='from-internal'):
    """Dial(PJSIP/<ext>/sip:<ext>@…) from caller: the phone's outgoing channel."""
    d = p.new_channel('PJSIP/' + ext, 0, ext, '<unknown>', context, caller.exten, caller.linkedid)
    p.connected(d, caller.cid, caller.cidname)
    p.dial_begin(caller, d, '%s/sip:%s@192.168.10.%s:5060' % (ext, ext, ext[-2:]))
    return d


def ring(p, caller, d):
    p.state(d, 5)
    p.dial_state(caller, d)


def answer(p, caller, d, bid=None):
    p.state(d, 6)
    p.dial_end(caller, d, 'ANSWER')
    if caller.state != 6:
        p.state(caller, 6)
    bid = bid or p.bridge_create()
    p.bridge_enter(bid, d)
    p.bridge_enter(bid, caller)
    return bid


def pjsip_inbound_answered():
    """Customer +79001234567 -> DID 74951112233 -> ext 101 (FreePBX), recorded; talk 8 s; the
    customer hangs up."""
    p = PBX(1795400000.100000)
    trunk = inbound_start(p, '74951112233', '+79001234567')
    p.newexten(trunk, 'macro-dial-one', 's', 'Dial', 'PJSIP/101/sip:101@192.168.10.01:5060,20,HhTtrM(auto-blkvm)')
    record(p, trunk, 'external-101-+79001234567-20261122-100000-1795400000.0.wav')
    d = device(p, trunk, '101')
    p.at(0.05)
    ring(p, trunk, d)
    p.at(3.0)
    bid = answer(p, trunk, d)
    p.at(8.0)
    p.hangup(trunk, 16, 'Normal Clearing')
    p.bridge_leave(bid, trunk)
    p.bridge_leave(bid, d)
    p.bridge_destroy(bid)
    p.hangup(d, 16, 'Normal Clearing')
    p.cdr(trunk, '101', 'from-did-direct', d.name, 'Dial', 'PJSIP/101', 'ANSWERED', 11, 8,
          'external-101-+79001234567-20261122-100000-1795400000.0.wav')
    p.write('pjsip_inbound_answered')


def pjsip_ringgroup():
    """+79001234567 -> DID 74951112244 -> FreePBX ring group 600 (ringall 101, 102, 103); 103 is
    offline (CHANUNAVAIL), 101 rings, 102 answers after 4 s; talk 5 s; 102 hangs up."""
    p = PBX(1795400100.000000, seq=10)
    trunk = inbound_start(p, '74951112244', '+79001234567')
    p.newexten(trunk, 'ext-group', '600', 'Dial', 'PJSIP/101/sip:101@…&PJSIP/102/sip:102@…&PJSIP/103,20,tr')
    d1 = device(p, trunk, '101')
    d2 = device(p, trunk, '102')
    d3 = device(p, trunk, '103')
    p.dial_end(trunk, d3, 'CHANUNAVAIL')
    p.hangup(d3, 20, 'Subscriber absent')
    ring(p, trunk, d1)
    ring(p, trunk, d2)
    p.at(4.0)
    p.state(d2, 6)
    p.dial_end(trunk, d2, 'ANSWER')
    p.dial_end(trunk, d1, 'CANCEL')
    p.hangup(d1, 26, 'Answered elsewhere')
    p.state(trunk, 6)
    bid = p.bridge_create()
    p.bridge_enter(bid, d2)
    p.bridge_enter(bid, trunk)
    p.at(5.0)
    p.hangup(d2, 16, 'Normal Clearing')
    p.bridge_leave(bid, d2)
    p.bridge_leave(bid, trunk)
    p.bridge_destroy(bid)
    p.hangup(trunk, 16, 'Normal Clearing')
    p.write('pjsip_ringgroup')


def freepbx_queue():
    """+79001234567 -> DID 74951112200 -> Queue(400) ringall, members Local/101@from-queue/n and
    Local/102@from-queue/n (FreePBX style: each member leg is a Local pair then the device); the
    trunk is answered on entry; 101 never answers, 102 answers after 6 s; talk 10 s."""
    p = PBX(1795400200.000000, seq=20)
    trunk = inbound_start(p, '74951112200', '+79001234567')
    p.state(trunk, 6)
    p.newexten(trunk, 'ext-queues', '400', 'Queue', '400,t,,,300')
    p.event('QueueCallerJoin', trunk.headers() + [('Queue', '400'), ('Position', '1'), ('Count', '1')], 'agent,all')
    legs = {}
    for ext in ('101', '102'):
        legs[ext] = p.new_local('%s@from-queue' % ext, trunk.cid, 'from-queue', ext, trunk.linkedid)
    devs = {}
    for ext, (l1, l2) in legs.items():
        p.event('AgentCalled', trunk.headers() + l1.headers('Dest') + [('Queue', '400'),
                ('MemberName', 'Agent ' + ext), ('Interface', 'Local/%s@from-queue/n' % ext)], 'agent,all')
        p.dial_begin(trunk, l1, 'Local/%s@from-queue/n' % ext)
        p.newexten(l2, 'from-queue-exten-only', ext, 'Dial', 'PJSIP/%s/sip:%s@…,,HhTtr' % (ext, ext))
        d = p.new_channel('PJSIP/' + ext, 0, ext, '<unknown>', 'from-internal', ext, trunk.linkedid)
        p.dial_begin(l2, d, '%s/sip:%s@192.168.10.%s:5060' % (ext, ext, ext[-2:]))
        devs[ext] = d
    for ext, (l1, l2) in legs.items():
        p.state(devs[ext], 5)
        p.dial_state(l2, devs[ext])
        p.state(l1, 5)
        p.dial_state(trunk, l1)
    p.at(6.0)
    l1, l2 = legs['102']
    d = devs['102']
    p.state(d, 6)
    p.dial_end(l2, d, 'ANSWER')
    p.state(l2, 6)
    b_inner = p.bridge_create()
    p.bridge_enter(b_inner, d)
    p.bridge_enter(b_inner, l2)
    p.state(l1, 6)
    p.dial_end(trunk, l1, 'ANSWER')
    o1, o2 = legs['101']
    p.dial_end(trunk, o1, 'CANCEL')
    p.hangup(o1, 26, 'Answered elsewhere')
    p.dial_end(o2, devs['101'], 'CANCEL')
    p.hangup(devs['101'], 26, 'Answered elsewhere')
    p.hangup(o2, 26, 'Answered elsewhere')
    p.event('QueueCallerLeave', trunk.headers() + [('Queue', '400'), ('Position', '1'), ('Count', '0')], 'agent,all')
    p.event('AgentConnect', trunk.headers() + l1.headers('Dest') + [('Queue', '400'), ('MemberName', 'Agent 102'),
            ('Interface', 'Local/102@from-queue/n'), ('HoldTime', '6'), ('RingTime', '6')], 'agent,all')
    b_outer = p.bridge_create()
    p.bridge_enter(b_outer, l1)
    p.bridge_enter(b_outer, trunk)
    p.at(10.0)
    p.hangup(trunk, 16, 'Normal Clearing')
    p.event('AgentComplete', trunk.headers() + l1.headers('Dest') + [('Queue', '400'), ('MemberName', 'Agent 102'),
            ('Interface', 'Local/102@from-queue/n'), ('HoldTime', '6'), ('TalkTime', '10'), ('Reason', 'caller')],
            'agent,all')
    p.bridge_leave(b_outer, trunk)
    p.bridge_leave(b_outer, l1)
    p.bridge_destroy(b_outer)
    p.hangup(l1, 16, 'Normal Clearing')
    p.bridge_leave(b_inner, l2)
    p.hangup(l2, 16, 'Normal Clearing')
    p.bridge_leave(b_inner, d)
    p.bridge_destroy(b_inner)
    p.hangup(d, 16, 'Normal Clearing')
    p.write('freepbx_queue')


def pjsip_outbound():
    """Ext 101 dials 89001234567; FreePBX's outbound route sets the outbound caller ID
    74951112233 and dials PJSIP/89001234567@provider; answered after 5 s; talk 20 s; 101 hangs
    up. Recorded."""
    p = PBX(1795400300.000000, seq=40)
    ph = p.new_channel('PJSIP/101', 4, '101', 'Ivan Petrov', 'from-internal', '89001234567')
    p.newexten(ph, 'from-internal', '89001234567', 'Macro', 'user-callerid,LIMIT,EXTERNAL,')
    p.newexten(ph, 'outrt-1', '89001234567', 'Macro', 'dialout-trunk,1,89001234567,,off')
    record(p, ph, 'out-89001234567-101-20261122-100500-1795400300.40.wav')
    p.callerid(ph, '74951112233', 'Office')
    p.newexten(ph, 'macro-dialout-trunk', 's', 'Dial', 'PJSIP/89001234567@provider,300,T')
    tr = p.new_channel('PJSIP/provider', 0, '89001234567', '<unknown>', 'from-pstn', 's', ph.linkedid)
    p.connected(tr, '74951112233', 'Office')
    p.dial_begin(ph, tr, '89001234567@provider')
    p.at(0.3)
    p.state(tr, 5)
    p.dial_state(ph, tr, 'PROGRESS')
    p.at(5.0)
    p.state(tr, 6)
    p.dial_end(ph, tr, 'ANSWER')
    p.state(ph, 6)
    bid = p.bridge_create()
    p.bridge_enter(bid, tr)
    p.bridge_enter(bid, ph)
    p.at(20.0)
    p.hangup(ph, 16, 'Normal Clearing')
    p.bridge_leave(bid, ph)
    p.bridge_leave(bid, tr)
    p.bridge_destroy(bid)
    p.hangup(tr, 16, 'Normal Clearing')
    p.write('pjsip_outbound')


def pjsip_outbound_busy_and_noroute():
    """Two calls: ext 102 dials +79005554433, the network answers busy (cause 17); then ext 103
    dials 999111222333, for which no outbound route exists (FreePBX plays an error and hangs up
    with congestion, no trunk is dialled)."""
    p = PBX(1795400400.000000, seq=50)
    ph = p.new_channel('PJSIP/102', 4, '102', 'Maria', 'from-internal', '+79005554433')
    p.newexten(ph, 'outrt-1', '+79005554433', 'Dial', 'PJSIP/+79005554433@provider,300,T')
    tr = p.new_channel('PJSIP/provider', 0, '+79005554433', '<unknown>', 'from-pstn', 's', ph.linkedid)
    p.dial_begin(ph, tr, '+79005554433@provider')
    p.at(0.4)
    p.dial_end(ph, tr, 'BUSY')
    p.hangup(tr, 17, 'User busy')
    p.newexten(ph, 'macro-outisbusy', 's', 'Playback', 'all-circuits-busy-now')
    p.at(2.0)
    p.hangup(ph, 17, 'User busy')

    p.at(5.0)
    ph3 = p.new_channel('PJSIP/103', 4, '103', 'Oleg', 'from-internal', '999111222333')
    p.newexten(ph3, 'from-internal', 'i', 'Playback', 'silence/1&cannot-complete-as-dialed')
    p.at(3.0)
    p.newexten(ph3, 'from-internal', 'i', 'Congestion', '20')
    p.hangup(ph3, 34, 'Circuit/channel congestion')
    p.write('pjsip_outbound_busy_and_noroute')


def pjsip_blind_transfer():
    """+79001234567 -> DID 74951112233 -> 101 answers after 2 s; after 10 s 101 blind-transfers
    (SIP REFER) to 102; 102 answers after 3 s; talk 15 s; the customer hangs up."""
    p = PBX(1795400500.000000, seq=60)
    trunk = inbound_start(p, '74951112233', '+79001234567')
    d1 = device(p, trunk, '101')
    ring(p, trunk, d1)
    p.at(2.0)
    bid = answer(p, trunk, d1)
    p.at(10.0)
    p.event('BlindTransfer', [('Result', 'Success')] + d1.headers('Transferer') + trunk.headers('Transferee') +
            p.bridge_headers(bid) + [('IsExternal', 'No'), ('Context', 'from-internal-xfer'), ('Extension', '102')])
    p.bridge_leave(bid, trunk)
    p.bridge_leave(bid, d1)
    p.bridge_destroy(bid)
    p.hangup(d1, 16, 'Normal Clearing')
    p.newexten(trunk, 'from-internal-xfer', '102', 'Macro', 'exten-vm,novm,102,0,0,0')
    p.newexten(trunk, 'macro-dial-one', 's', 'Dial', 'PJSIP/102/sip:102@…,20,HhTtr')
    d2 = device(p, trunk, '102')
    ring(p, trunk, d2)
    p.at(3.0)
    bid2 = answer(p, trunk, d2)
    p.at(15.0)
    p.hangup(trunk, 16, 'Normal Clearing')
    p.bridge_leave(bid2, trunk)
    p.bridge_leave(bid2, d2)
    p.bridge_destroy(bid2)
    p.hangup(d2, 16, 'Normal Clearing')
    p.write('pjsip_blind_transfer')


def pjsip_attended_transfer():
    """+79001234567 -> 101 answers after 1 s; after 5 s 101 puts the customer on hold and places a
    consultation call from the phone (a new PJSIP/101 channel, a new Linkedid) to 102, which
    answers after 2 s; they talk 4 s; 101 completes the transfer (REFER with Replaces): Asterisk
    merges the bridges, 102 joins the customer's bridge (taking the customer's Linkedid) and
    both of 101's channels hang up; 102 and the customer talk 12 s; 102 hangs up."""
    p = PBX(1795400600.000000, seq=70)
    trunk = inbound_start(p, '74951112233', '+79001234567')
    d1 = device(p, trunk, '101')
    ring(p, trunk, d1)
    p.at(1.0)
    b1 = answer(p, trunk, d1)
    p.at(5.0)
    p.event('Hold', d1.headers())
    p.event('MusicOnHoldStart', trunk.headers() + [('Class', 'default')])
    c1 = p.new_channel('PJSIP/101', 4, '101', 'Ivan Petrov', 'from-internal', '102')
    p.newexten(c1, 'macro-dial-one', 's', 'Dial', 'PJSIP/102/sip:102@…,20,HhTtr')
    c2 = device(p, c1, '102')
    ring(p, c1, c2)
    p.at(2.0)
    b2 = answer(p, c1, c2)
    p.at(4.0)
    p.event('AttendedTransfer', [('Result', 'Success')] + d1.headers('OrigTransferer') + p.bridge_headers(b1, 'Orig') +
            c1.headers('SecondTransferer') + p.bridge_headers(b2, 'Second') + trunk.headers('Transferee') +
            c2.headers('TransferTarget') + [('IsExternal', 'No'), ('DestType', 'Bridge'), ('DestBridgeUniqueid', b1)])
    p.event('BridgeMerge', p.bridge_headers(b1, 'To') + p.bridge_headers(b2, 'From'))
    p.bridge_leave(b2, c2)
    c2.linkedid = trunk.linkedid
    p.bridge_enter(b1, c2)
    p.event('MusicOnHoldStop', trunk.headers())
    p.bridge_leave(b2, c1)
    p.bridge_destroy(b2)
    p.hangup(c1, 16, 'Normal Clearing')
    p.bridge_leave(b1, d1)
    p.hangup(d1, 16, 'Normal Clearing')
    p.at(12.0)
    p.hangup(c2, 16, 'Normal Clearing')
    p.bridge_leave(b1, c2)
    p.bridge_leave(b1, trunk)
    p.bridge_destroy(b1)
    p.hangup(trunk, 16, 'Normal Clearing')
    p.write('pjsip_attended_transfer')


def pjsip_pickup():
    """+79001234567 -> DID 74951112201 -> 101 rings; after 4 s 102 dials *8 (group pickup) from
    its phone (a new channel and Linkedid); Asterisk moves 102's channel into the ringing dial
    (masquerade: the ringing PJSIP/101 channel goes away) and bridges it with the customer; talk
    9 s; the customer hangs up."""
    p = PBX(1795400700.000000, seq=80)
    trunk = inbound_start(p, '74951112201', '+79001234567')
    d1 = device(p, trunk, '101')
    ring(p, trunk, d1)
    p.at(4.0)
    pk = p.new_channel('PJSIP/102', 4, '102', 'Maria', 'from-internal', '*8')
    p.newexten(pk, 'app-pickup', '*8', 'Pickup', '')
    p.event('Pickup', pk.headers() + d1.headers('Target'))
    p.state(pk, 6)
    p.hangup(d1, 26, 'Answered elsewhere')
    p.dial_end(trunk, pk, 'ANSWER')
    p.state(trunk, 6)
    bid = p.bridge_create()
    pk.linkedid = trunk.linkedid
    p.bridge_enter(bid, pk)
    p.bridge_enter(bid, trunk)
    p.at(9.0)
    p.hangup(trunk, 16, 'Normal Clearing')
    p.bridge_leave(bid, trunk)
    p.bridge_leave(bid, pk)
    p.bridge_destroy(bid)
    p.hangup(pk, 16, 'Normal Clearing')
    p.write('pjsip_pickup')


def ivr_abandoned_and_voicemail():
    """Two inbound calls: 89005550001 -> DID 74951112233 -> IVR (Answer, Background), hangs up
    after 7 s without choosing; then +79005550002 -> 101 rings 15 s, no answer, FreePBX sends the
    caller to VoiceMail, who leaves a message for 12 s and hangs up."""
    p = PBX(1795400800.000000, seq=90)
    t1 = p.new_channel('PJSIP/provider', 4, '89005550001', '<unknown>', 'from-pstn', '74951112233')
    p.newexten(t1, 'from-pstn', '74951112233', 'Goto', 'ivr-1,s,1')
    p.state(t1, 6)
    p.newexten(t1, 'ivr-1', 's', 'Background', 'custom/welcome')
    p.at(7.0)
    p.hangup(t1, 16, 'Normal Clearing')

    p.at(10.0)
    t2 = inbound_start(p, '74951112233', '+79005550002')
    d = device(p, t2, '101')
    ring(p, t2, d)
    p.at(15.0)
    p.dial_end(t2, d, 'NOANSWER')
    p.hangup(d, 16, 'Normal Clearing')
    p.newexten(t2, 'macro-vm', 's', 'VoiceMail', '101@default,u')
    p.state(t2, 6)
    p.at(12.0)
    p.hangup(t2, 16, 'Normal Clearing')
    p.write('ivr_abandoned_and_voicemail')


def click_to_call_pjsip():
    """CRM click-to-call through AMI Originate Channel=PJSIP/101 (rings the agent first),
    Context=from-internal Exten=+79001234567, __PBXBRIDGE_ORIGINATE_ID=b24-77; 101 answers after
    3 s, the outbound route dials the customer, who answers after 4 s; talk 30 s; the customer
    hangs up."""
    p = PBX(1795400900.000000, seq=100)
    ag = p.new_channel('PJSIP/101', 0, '+79001234567', 'CRM call', 'from-internal', '+79001234567')
    p.varset(ag, '__PBXBRIDGE_ORIGINATE_ID', 'b24-77')
    p.dial_begin(None, ag, 'PJSIP/101')
    p.state(ag, 5)
    p.dial_state(None, ag)
    p.at(3.0)
    p.state(ag, 6)
    p.dial_end(None, ag, 'ANSWER')
    p.event('OriginateResponse', [('ActionID', 'c2c-1'), ('Response', 'Success'), ('Channel', ag.name),
            ('Context', 'from-internal'), ('Exten', '+79001234567'), ('Reason', '4'), ('Uniqueid', ag.uid),
            ('CallerIDNum', ag.cid), ('CallerIDName', ag.cidname)])
    p.newexten(ag, 'outrt-1', '+79001234567', 'Dial', 'PJSIP/+79001234567@provider,300,T')
    tr = p.new_channel('PJSIP/provider', 0, '+79001234567', '<unknown>', 'from-pstn', 's', ag.linkedid)
    p.connected(tr, '74951112233', 'Office')
    p.dial_begin(ag, tr, '+79001234567@provider')
    p.at(4.0)
    p.state(tr, 6)
    p.dial_end(ag, tr, 'ANSWER')
    bid = p.bridge_create()
    p.bridge_enter(bid, tr)
    p.bridge_enter(bid, ag)
    p.at(30.0)
    p.hangup(tr, 16, 'Normal Clearing')
    p.bridge_leave(bid, tr)
    p.bridge_leave(bid, ag)
    p.bridge_destroy(bid)
    p.hangup(ag, 16, 'Normal Clearing')
    p.write('click_to_call_pjsip')


def sip_internal_and_iax_missed():
    """chan_sip PBX: SIP/101 calls SIP/102 (internal, answered after 2 s, talk 6 s); then
    an inbound call on an IAX2 trunk IAX2/telco-… to 101 rings 5 s unanswered (CANCEL), the
    caller hangs up."""
    p = PBX(1795401000.000000, seq=110)
    a = p.new_channel('SIP/101', 4, '101', 'Ivan', 'from-internal', '102')
    p.newexten(a, 'macro-dial-one', 's', 'Dial', 'SIP/102,20,tr')
    b = p.new_channel('SIP/102', 0, '102', '<unknown>', 'from-internal', '102', a.linkedid)
    p.dial_begin(a, b, '102')
    p.state(b, 5)
    p.dial_state(a, b)
    p.at(2.0)
    bid = answer(p, a, b)
    p.at(6.0)
    p.hangup(a, 16, 'Normal Clearing')
    p.bridge_leave(bid, a)
    p.bridge_leave(bid, b)
    p.bridge_destroy(bid)
    p.hangup(b, 16, 'Normal Clearing')

    p.at(3.0)
    t = p.new_channel('', 4, '+74957654321', '<unknown>', 'from-trunk', '74951112201', name='IAX2/telco-4321')
    d = p.new_channel('SIP/101', 0, '101', '<unknown>', 'from-internal', '74951112201', t.linkedid)
    p.dial_begin(t, d, '101')
    p.state(d, 5)
    p.dial_state(t, d)
    p.at(5.0)
    p.hangup(t, 16, 'Normal Clearing')
    p.dial_end(t, d, 'CANCEL')
    p.hangup(d, 16, 'Normal Clearing')
    p.write('sip_internal_and_iax_missed')


if __name__ == '__main__':
    pjsip_inbound_answered()
    pjsip_ringgroup()
    freepbx_queue()
    pjsip_outbound()
    pjsip_outbound_busy_and_noroute()
    pjsip_blind_transfer()
    pjsip_attended_transfer()
    pjsip_pickup()
    ivr_abandoned_and_voicemail()
    click_to_call_pjsip()
    sip_internal_and_iax_missed()
