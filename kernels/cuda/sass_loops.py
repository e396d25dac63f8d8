# SASS summary for NOTES.md "Scan forward v6": per function, the instruction mix of every loop
# (backward branch) that contains MUFU. Usage: python3 sass_loops.py sass.txt (cuobjdump -sass output).
import re, sys, collections
txt = open(sys.argv[1]).read().split('\n')
funcs = []; cur = None
for l in txt:
    m = re.search(r'Function : (\S+)', l)
    if m: cur = [m.group(1), []]; funcs.append(cur); continue
    m = re.match(r'\s*/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)(.*?);', l)
    if m and cur: cur[1].append((int(m.group(1), 16), m.group(3), m.group(4)))
for name, ins in funcs:
    short = re.sub(r'.*(v\d_kernel)I13__nv_bfloat16', r'\1 bf16 ', name)[:150]
    print('==', short, 'instructions', len(ins))
    addr = {a: i for i, (a, _, _) in enumerate(ins)}
    loops = []
    for i, (a, op, rest) in enumerate(ins):
        if op.startswith('BRA'):
            m = re.search(r'0x([0-9a-f]+)', rest)
            if m:
                t = int(m.group(1), 16)
                if t < a and t in addr: loops.append((addr[t], i))
    for s, e in loops:
        body = ins[s:e + 1]
        ops = collections.Counter(op.split('.')[0] for _, op, _ in body)
        if ops.get('MUFU', 0) == 0: continue
        full = collections.Counter(op for _, op, _ in body)
        print('  loop [%d..%d] %d instructions; MUFU %d' % (s, e, len(body), ops['MUFU']))
        print('   ', ', '.join('%s %d' % kv for kv in sorted(ops.items(), key=lambda kv: -kv[1])))
        print('   ', ', '.join('%s %d' % kv for kv in sorted(full.items(), key=lambda kv: -kv[1])[:25]))
