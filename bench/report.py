"""Turns bench/out/*.txt and *.json (written by bench/run.sh) into
bench/RESULTS.md and bench/latency.svg."""

import json
import os
import platform
import statistics
import subprocess
import sys

out = sys.argv[1]
here = os.path.dirname(os.path.abspath(__file__))


def lines(name):
    path = os.path.join(out, name)
    return [l.split() for l in open(path).read().split("\n") if l.strip()] if os.path.exists(path) else []


def version(cmd):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (r.stdout + r.stderr).strip().split("\n")[0]
    except OSError:
        return "not installed"


def field(f, key, cast=float):
    """The value after `key` in a split line."""
    return cast(f[f.index(key) + 1])


runs, secs = os.environ.get("RUNS", "3"), os.environ.get("SECS", "10")
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print("# Benchmark results\n")
print("Reproduce everything with `bench/run.sh`, or one scenario with `bench/run.sh proxies|concurrent|syscalls|latency|h2|tls|upstream-tls|balancing|failover|registry|registry-mtls|registry-ha|instructions|shared|idle`")
print("(`BASELINE=<commit>` adds that commit's gateway to the proxies, concurrent and instructions scenarios). Each proxy or store runs pinned to CPU 1")
print("(one worker); the load generators and backends run on CPU 0. Logging is off everywhere. Figures are medians of")
print(f"{runs} runs of {secs} s each unless a section says otherwise.\n")
print(f"- machine: {cpu}, {os.cpu_count()} CPUs, {platform.platform()}")
print(f"- nginx: {version(['nginx', '-v'])}; HAProxy: {version(['haproxy', '-v'])}")
print(f"- etcd: {version(['etcd', '--version'])}; h2load: {version(['h2load', '--version'])}")
code = version(["git", "log", "-1", "--format=%h", "--", "gateway", "registry", "runtime", "client", "proto"])
print(f"- gateway and registry: release builds of commit {code} (the last one to change their code)\n")

# --- proxies -----------------------------------------------------------------
together = any(f[0] == "concurrent" for f in lines("concurrent.txt"))
maxes, busy, capped, fixed, rate, cap = {}, {}, {}, {}, None, None
for f in lines("proxies.txt"):
    if f[0] == "max":
        maxes[f[1]] = float(f[2])
        busy[f[1]] = field(f, "cpu0_busy") if "cpu0_busy" in f else None
    elif f[0] == "capped":
        capped[f[1]] = dict(rps=float(f[2]), busy=field(f, "cpu0_busy"), throttled=field(f, "throttled"))
    elif f[0] == "cap":
        cap = f[1]
    elif f[:2] == ["fixed", "rate"]:
        rate = f[2]
    elif f[0] == "fixed":
        fixed[f[1]] = dict(cpu=field(f, "cpu_us"), p50=field(f, "p50"), p99=field(f, "p99"), p999=field(f, "p999"))

if maxes:
    print("## Gateway vs nginx vs HAProxy vs direct (HTTP/1.1, keep-alive both sides)\n")
    print("Load: `bench-load` (open loop, 64 fixed keep-alive connections, latency from each request's scheduled start,")
    print("like `oha -q R --latency-correction`). CPU per request is the proxy's user+system time from /proc over the run,")
    print(f"divided by the requests answered. Fixed-rate figures at {rate} requests/s (half the slower proxy's maximum);")
    n_runs = max((sum(1 for f in lines("proxies-runs.txt") if f[:2] == ["fixed", n]) for n in ["nginx"]), default=0)
    print(f"medians of {n_runs or runs} runs.\n")
    cap_head = f" | max req/s, proxy held to {cap} % of a CPU" if capped else ""
    print(f"| target | max req/s (CPU 0 busy){cap_head} | CPU µs per request | p50 µs | p99 µs | p99.9 µs |")
    print("|---|---|" + ("---|" if capped else "") + "---|---|---|---|")
    for name in ["direct", "nginx", "haproxy", "gateway", "baseline"]:
        if name not in maxes:
            continue
        m, x = maxes[name], fixed.get(name, {})
        # "direct" has no proxy process; its CPU column would measure the script itself.
        c = "–" if name == "direct" else f"{x.get('cpu', 0):.2f}"
        label = "gateway (baseline commit)" if name == "baseline" else name
        k = capped.get(name)
        cc = (f" | {k['rps']:.0f} (CPU 0 {k['busy']:.0f} %)" if k else " | –") if capped else ""
        b = f" ({busy[name]:.0f} %)" if busy.get(name) is not None else ""
        print(f"| {label} | {m:.0f}{b}{cc} | {c} | {x.get('p50', 0):.0f} | {x.get('p99', 0):.0f} | {x.get('p999', 0):.0f} |")
    print()
    def ratio(label, table, a, b, key=None):
        """Prints `label: a/b` from `table` when both are in it."""
        if a in table and b in table:
            x, y = (table[a][key], table[b][key]) if key else (table[a], table[b])
            print(f"{label}: {x / y:.2f}")

    # With the proxies also measured together (below), the headline line comes
    # from there: one after another, single runs move by more than the
    # difference measured.
    seq = ", one after another" if together else ""
    ratio(f"gateway/nginx cpu per request ratio{seq}", fixed, "gateway", "nginx", "cpu")
    if "gateway" in capped and "nginx" in capped:
        ratio("gateway/nginx throughput ratio", capped, "gateway", "nginx", "rps")
        ratio("gateway/nginx throughput ratio, uncapped (CPU 0 saturated, not counted)", maxes, "gateway", "nginx")
        ratio("baseline gateway/nginx throughput ratio", capped, "baseline", "nginx", "rps")
    else:
        ratio("gateway/nginx throughput ratio", maxes, "gateway", "nginx")
    ratio("gateway/haproxy cpu per request ratio", fixed, "gateway", "haproxy", "cpu")
    ratio("baseline gateway/nginx cpu per request ratio", fixed, "baseline", "nginx", "cpu")
    per_run = {}
    for f in lines("proxies-runs.txt"):
        if f[0] == "fixed" and len(f) >= 4:
            per_run.setdefault(f[1], []).append(float(f[3]))
    if per_run:
        print("\nCPU µs per request in each run (runs interleave the targets, so a slow stretch of the machine falls")
        print("on all of them alike):\n")
        for name, v in per_run.items():
            print(f"- {name}: {', '.join(f'{x:.1f}' for x in v)}")
    maxima = {}
    for f in lines("proxies-runs.txt"):
        if f[0] in ("max", "capped") and len(f) >= 4:
            maxima.setdefault((f[0], f[1]), []).append(float(f[3]))
    if maxima:
        print("\nMaximum requests/s in each run:\n")
        for (kind, name), v in maxima.items():
            print(f"- {name}{f', held to {cap} %' if kind == 'capped' else ''}: {', '.join(f'{x:.0f}' for x in v)}")
    print("\nThe throughput maximum is closed-loop over the same 64 connections. The issue counts it only when the")
    print("proxy's CPU is the saturated one. Uncapped it is not: the generator and the three backends share CPU 0,")
    print("which is the busy one (its share is in brackets), so the uncapped maximum measures how cheaply CPU 0 runs.")
    if capped:
        thr = ", ".join(f"{n} {k['throttled']:.0f} %" for n, k in capped.items())
        print(f"The counted figure holds each proxy to {cap} % of one CPU (cgroup `cpu` controller, CFS bandwidth in 10 ms")
        print(f"periods; `CAP=` sets it): the proxy used up its quota in nearly every period ({thr} of periods")
        print("throttled) while CPU 0 kept room, so that maximum is the proxy's own, at saturation, with the batching")
        print("saturation brings. The ratio line above is from it; the uncapped one is given beside it.\n")
    else:
        print("No cgroup `cpu` controller was writable in this run (it needs root), so the ratio line is the uncapped")
        print("one and says little; the CPU-per-request ratio at the same offered load is the headline.\n")

# --- proxies measured together -----------------------------------------------------
conc = [f for f in lines("concurrent.txt") if f[0] == "concurrent"]
if conc:
    names = [n for n in ["nginx", "haproxy", "gateway", "baseline", "relay"] if n in conc[0]]
    print("### The same, measured at the same time\n")
    print(f"`bench/run.sh concurrent`: {', '.join(n for n in names if n not in ('baseline', 'relay'))}{' (and the baseline commit)' if 'baseline' in names else ''}{' and a layer-4 relay' if 'relay' in names else ''} all pinned to CPU 1 at once, each")
    print(f"offered {field(conc[0], 'rate', int):,} requests/s by its own generator on CPU 0, {len(conc)} runs of {secs} s. One after another (above), a")
    print("proxy's CPU per request moved by up to ±15 % between 5-second runs on this machine (a virtual CPU on a")
    print("shared host), more than the difference measured; at the same time, a slow stretch of the host falls on")
    print("all of them in the same seconds, and each run gives one ratio. The proxies share CPU 1 (and its caches),")
    print("as nothing else shares it in the scenario above. The headline `gateway/nginx cpu per request ratio` line is")
    print("this measurement's median; the one-after-another ratio is given with the table above.\n")
    print("| run | " + " | ".join(f"{n} µs" for n in names) + " | gateway/nginx |" + (" baseline/nginx |" if "baseline" in names else ""))
    print("|---|" + "---|" * len(names) + "---|" + ("---|" if "baseline" in names else ""))
    ratios, base = [], []
    for f in conc:
        v = {n: field(f, n) for n in names}
        ratios.append(v["gateway"] / v["nginx"])
        row = f"| {field(f, 'run', int)} | " + " | ".join(f"{v[n]:.2f}" for n in names) + f" | {ratios[-1]:.2f} |"
        if "baseline" in names:
            base.append(v["baseline"] / v["nginx"])
            row += f" {base[-1]:.2f} |"
        print(row)
    print()
    print(f"gateway/nginx cpu per request ratio: {statistics.median(ratios):.2f}")
    print(f"gateway/nginx cpu per request ratio, measured together: {statistics.median(ratios):.2f} (median of {len(ratios)} runs; {min(ratios):.2f} to {max(ratios):.2f})")
    if "haproxy" in names:
        vs = [field(f, "gateway") / field(f, "haproxy") for f in conc]
        print(f"gateway/haproxy cpu per request ratio, measured together: {statistics.median(vs):.2f}")
    if base:
        print(f"\nbaseline gateway/nginx cpu per request ratio, measured together: {statistics.median(base):.2f}")
    if "relay" in names:
        floor = [field(f, "relay") / field(f, "nginx") for f in conc]
        print(f"relay/nginx cpu per request ratio, measured together: {statistics.median(floor):.2f} ({min(floor):.2f} to {max(floor):.2f})")
        print("\nThe relay is HAProxy in `mode tcp`: each client connection paired with one backend connection, bytes")
        print("copied both ways, no HTTP parsed or written. It makes an HTTP proxy's receives and sends per request (with")
        print("a few more `epoll_wait`s than nginx) and the kernel does the same loopback TCP work for it, so its ratio is")
        print("about what is left of a proxy's CPU per request here once the HTTP work is taken away.")
    print()

# --- where the CPU goes: user, system, system calls (issue 20) ------------------------
sc = [f for f in lines("syscalls.txt") if f[0] == "syscalls"]
if sc:
    names = [n for n in ["nginx", "haproxy", "gateway", "relay"] if any(f[1] == n for f in sc)]
    keys = [k for k in ["user_us", "sys_us", "faults", "all", "recvfrom", "read", "writev", "sendto", "write", "epoll_wait", "futex"]
            if any(k in f for f in sc)]
    print("### Where a request's CPU goes: user, system, system calls\n")
    print(f"`bench/run.sh syscalls`: each proxy pinned to CPU 1 with one worker, alone at {os.environ.get('SYSCALL_RATE', '5000')} requests/s over 64")
    print("connections; user and system CPU µs per request (/proc, 10 ms ticks), minor page faults and system calls per request (perf's")
    print(f"syscall tracepoints), medians of {len(sc) // max(len(names), 1)} interleaved runs. nginx: its worker process;")
    print("relay: HAProxy in `mode tcp`, the layer-4 floor (see the section above).\n")
    print("| proxy | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    med = {}
    for n in names:
        mine = [f for f in sc if f[1] == n]
        med[n] = {k: statistics.median(field(f, k) for f in mine if k in f) for k in keys if any(k in f for f in mine)}
        print(f"| {n} | " + " | ".join(f"{med[n].get(k, 0):.2f}" for k in keys) + " |")
    print()
    if {"nginx", "gateway"} <= med.keys():
        g, n = med["gateway"], med["nginx"]
        print(f"gateway/nginx system calls per request ratio: {g['all'] / n['all']:.2f}")
        print(f"gateway/nginx system cpu per request ratio: {g['sys_us'] / n['sys_us']:.2f}")
        print(f"gateway/nginx user cpu per request ratio: {g['user_us'] / n['user_us']:.2f}")
        print()

# --- latency against the baseline commit (issue 20 item 7) --------------------------
lat = {f[0]: f for f in lines("latency.txt") if f[1:2] == ["runs"]}
if lat:
    print("### Latency at a fixed rate against the baseline commit\n")
    print(f"`BASELINE=<commit> bench/run.sh latency`: both pinned to CPU 1 with one worker, {os.environ.get('LATENCY_RATE', '21453')} requests/s")
    print("over 64 connections, runs interleaved; medians.\n")
    print("| gateway | runs | p50 µs | p99 µs | p99.9 µs | CPU µs per request |")
    print("|---|---|---|---|---|---|")
    for n, f in lat.items():
        print(f"| {n} | {field(f, 'runs', int)} | {field(f, 'p50'):.0f} | {field(f, 'p99'):.0f} | {field(f, 'p999'):.0f} | {field(f, 'cpu_us'):.2f} |")
    print()
    if {"gateway", "baseline"} <= lat.keys():
        print(f"gateway/baseline p99 at half load ratio: {field(lat['gateway'], 'p99') / field(lat['baseline'], 'p99'):.2f}\n")

# --- instructions ----------------------------------------------------------------
ins = {f[1]: int(f[3]) for f in lines("instructions.txt") if f[0] == "instructions"}
if {"nginx", "gateway"} & ins.keys():
    print("### User-space instructions per request (callgrind)\n")
    print("CPU time moves by ±20 % between runs on this machine; instruction counts by a few percent (the gateway's")
    print("timers and background work follow the clock; nginx 16,500 to 16,700). `bench/run.sh instructions`")
    print("runs each proxy under callgrind for 1,000 and for 5,000 requests (500 requests/s, 8 connections) and")
    print("divides the difference; for the gateway (its `profiling` build) without the metrics exporter's clock")
    print("calibration at start-up, which varies by millions of instructions between runs (the baseline commit's")
    print("gateway runs its profiling build too, for the same reason). System calls are the")
    print("kernel's and are not counted here; they are the larger part of the CPU time above, and the gateway makes")
    print("as many per request as nginx: two reads, two writes and half an `epoll_wait` at 20,000 requests/s.\n")
    print("| proxy | instructions per request | ratio to nginx |")
    print("|---|---|---|")
    for name in ["nginx", "gateway", "baseline"]:
        if name in ins:
            label = "gateway (baseline commit)" if name == "baseline" else name
            print(f"| {label} | {ins[name]:,} | {ins[name] / ins['nginx']:.2f} |" if "nginx" in ins else f"| {label} | {ins[name]:,} | – |")
    print()
    if "gateway" in ins and "nginx" in ins:
        print(f"gateway/nginx user instructions per request ratio: {ins['gateway'] / ins['nginx']:.2f}\n")
h2_protos = [p for p in ["h2c", "h2-tls"] if f"gateway-{p}" in ins or f"nginx-{p}" in ins]
if h2_protos:
    print("HTTP/2 counted the same way: h2load, 10 connections of up to 10 streams, 500 requests/s; over TLS 1.3")
    print("the handshakes are in both counts and cancel out, so these are the records' cost (`PROTOS=\"h2c h2-tls\"")
    print("bench/run.sh instructions`). The gateway serves HTTP/2 with hyper's server and the h2 crate.\n")
    print("| protocol | nginx | gateway | gateway/nginx |")
    print("|---|---|---|---|")
    for p in h2_protos:
        g, n = ins.get(f"gateway-{p}"), ins.get(f"nginx-{p}")
        cell = lambda v: f"{v:,}" if v else "–"
        print(f"| {p} | {cell(n)} | {cell(g)} | {f'{g / n:.2f}' if g and n else '–'} |")
    print()
    for p in h2_protos:
        if f"gateway-{p}" in ins and f"nginx-{p}" in ins:
            print(f"gateway/nginx {p} user instructions per request ratio: {ins[f'gateway-{p}'] / ins[f'nginx-{p}']:.2f}")
    print()

# --- latency plot --------------------------------------------------------------
curves = {}
for name in ["direct", "nginx", "haproxy", "gateway", "baseline"]:
    path = os.path.join(out, f"latency-{name}.json")
    if os.path.exists(path):
        r = json.load(open(path))
        if "p90_us" in r:
            curves[name] = [r["p50_us"], r["p90_us"], r["p99_us"], r["p999_us"], r["p9999_us"], r["max_us"]]
if curves:
    import math

    labels = ["p50", "p90", "p99", "p99.9", "p99.99", "max"]
    colours = {"direct": "#888888", "nginx": "#1b9e77", "haproxy": "#7570b3", "gateway": "#d95f02", "baseline": "#e7298a"}
    w, h, left, right, top, bottom = 720, 420, 70, 150, 30, 50
    lo = min(min(v) for v in curves.values() if min(v) > 0)
    hi = max(max(v) for v in curves.values())
    lo_e, hi_e = math.floor(math.log10(max(lo, 1))), math.ceil(math.log10(max(hi, 10)))
    px = lambda i: left + i * (w - left - right) / (len(labels) - 1)
    py = lambda v: top + (hi_e - math.log10(max(v, 1))) / (hi_e - lo_e) * (h - top - bottom)
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{left}" y="18">Latency percentiles at {rate} req/s (open loop, µs, log scale)</text>']
    for e in range(lo_e, hi_e + 1):
        y = py(10 ** e)
        svg.append(f'<line x1="{left}" x2="{w - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        svg.append(f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">{10 ** e:,}</text>')
    for i, l in enumerate(labels):
        svg.append(f'<text x="{px(i):.1f}" y="{h - bottom + 20}" text-anchor="middle">{l}</text>')
    for k, (name, v) in enumerate(curves.items()):
        pts = " ".join(f"{px(i):.1f},{py(x):.1f}" for i, x in enumerate(v))
        c = colours.get(name, "black")
        svg.append(f'<polyline points="{pts}" fill="none" stroke="{c}" stroke-width="2"/>')
        for i, x in enumerate(v):
            svg.append(f'<circle cx="{px(i):.1f}" cy="{py(x):.1f}" r="3" fill="{c}"/>')
        y = top + 20 + 18 * k
        svg.append(f'<line x1="{w - right + 10}" x2="{w - right + 30}" y1="{y - 4}" y2="{y - 4}" stroke="{c}" stroke-width="3"/>')
        svg.append(f'<text x="{w - right + 36}" y="{y}" fill="{c}">{name}</text>')
    svg.append("</svg>")
    open(os.path.join(here, "latency.svg"), "w").write("\n".join(svg) + "\n")
    print("![Latency percentiles](latency.svg)\n")
    print("(one run per target at the fixed rate; the table above has the medians.)\n")

# --- HTTP/2 and gRPC -------------------------------------------------------------
h2 = lines("h2.txt")
if h2:
    print("## HTTP/2 and unary gRPC: gateway vs nginx\n")
    print("`h2load -c 10 -m 10 --rps R` (10 connections, 10 streams each) against h2c by prior knowledge. h2c: GET / to the")
    print("three HTTP/1.1 backends (nginx `proxy_pass`); gRPC: `echo.v1.Echo/Unary` to three `echo` examples (nginx")
    print("`grpc_pass` with `keepalive`). h2load reports a mean, not percentiles.\n")
    print("| protocol | proxy | req/s | CPU µs per request | mean µs | failed |")
    print("|---|---|---|---|---|---|")
    by = {}
    for f in h2:
        kind, name = f[1], f[2]
        by[(kind, name)] = field(f, "cpu_us")
        print(f"| {kind} | {name} | {field(f, 'rps'):.0f} | {field(f, 'cpu_us'):.2f} | {field(f, 'mean_us'):.0f} | {field(f, 'failed'):.0f} |")
    print()
    for kind in ["h2c", "grpc"]:
        if (kind, "gateway") in by and (kind, "nginx") in by:
            print(f"gateway/nginx {kind} cpu per request ratio: {by[(kind, 'gateway')] / by[(kind, 'nginx')]:.2f}")
    print()

# --- TLS termination (issue 20) ------------------------------------------------------
tls = {(f[1], f[2]): f for f in lines("tls.txt") if f[0] == "tls"}
if tls:
    rate = os.environ.get("TLS_RATE", "4000")
    print("## TLS 1.3 termination and h2c: gateway vs nginx\n")
    print("`bench/run.sh tls`: the same certificate (ECDSA P-256) for both, nginx with `ssl_protocols TLSv1.3`, the")
    print("gateway with rustls (ring); each pinned to CPU 1 with one worker, h2load and the three HTTP/1.1 backends on")
    print("CPU 0. HTTP/1.1 over TLS: `h2load --h1 -c 64`; h2 over TLS (ALPN) and h2c by prior knowledge: `h2load -c 10")
    print(f"-m 10`. CPU per request at {int(rate):,} requests/s each, both proxies loaded at the same time (one after another it")
    print(f"moved by more than their difference); then each one's maximum held to {os.environ.get('CAP', '50')} % of a CPU (it saturates, not")
    print("CPU 0). Connections are opened once per run: record encryption, not handshakes. Medians of the runs; the")
    print("session column is what h2load negotiated.\n")
    print("| protocol | proxy | CPU µs per request | max req/s (capped) | mean µs | failed | session |")
    print("|---|---|---|---|---|---|---|")
    for (kind, name), f in tls.items():
        mx = f[f.index("capped_max") + 1]
        mx = f"{float(mx):,.0f}" if mx != "-" else "–"
        print(f"| {kind} | {name} | {field(f, 'cpu_us'):.2f} | {mx} | {field(f, 'mean_us'):.0f} | {field(f, 'failed'):.0f} | {f[f.index('session') + 1]} |")
    print()
    ratios = {}
    for kind in ["h1-tls", "h2-tls", "h2c"]:
        if (kind, "gateway") in tls and (kind, "nginx") in tls:
            ratios[kind] = field(tls[(kind, "gateway")], "cpu_us") / field(tls[(kind, "nginx")], "cpu_us")
            g, n = tls[(kind, "gateway")], tls[(kind, "nginx")]
            if "-" not in (g[g.index("capped_max") + 1], n[n.index("capped_max") + 1]):
                print(f"gateway/nginx {kind} capped throughput ratio: {field(g, 'capped_max') / field(n, 'capped_max'):.2f}")
    for kind, r in ratios.items():
        print(f"gateway/nginx {kind} cpu per request ratio: {r:.2f}")
    if {"h1-tls", "h2-tls"} <= ratios.keys():
        both = statistics.mean([ratios["h1-tls"], ratios["h2-tls"]])
        print(f"gateway/nginx tls cpu per request ratio: {both:.2f} (the mean of HTTP/1.1 and h2 over TLS 1.3)")
    print()

# --- balancing -------------------------------------------------------------------
bal = lines("balancing.txt")
if bal:
    print("## Balancing quality: three backends, one ten times slower (20 ms sleep)\n")
    print("400 requests/s through the gateway for each policy, set per service in the registry (`lb.policy`).\n")
    print("| policy | slow backend's share | p50 µs | p99 µs | p99.9 µs | failed |")
    print("|---|---|---|---|---|---|")
    for f in bal:
        print(f"| {f[0]} | {f[2]}% | {f[4]} | {f[6]} | {f[8]} | {f[10]} |")
    ewma = next((f for f in bal if f[0] == "peak_ewma"), None)
    if ewma:
        print(f"\npeak_ewma slow share: {float(ewma[2]):.1f}%\n")

# --- failover --------------------------------------------------------------------
fo = lines("failover.txt")
if fo:
    print("## Failover at 1,000 requests/s\n")
    print("SIGKILL of one of three backends 3 s into the run; then a rolling restart (each backend killed, started again")
    print("1 s later, the next 2 s after that). nginx uses passive `max_fails=1` with `proxy_next_upstream error timeout`.")
    print("Time to ejection is read from the gateway's `/api/services` (polled; about 50 ms resolution); nginx has no")
    print("such view without its commercial API. Ejection after a SIGKILL comes from the first connect refused or the")
    print("stall rule; in one of six runs in earlier rounds the killed backend was never ejected: peak EWMA stopped picking it after")
    print("its in-flight requests were reset (their latency counts as 1 s), so no connect error came, and no request")
    print("failed either. nginx's rolling-restart failures are `no live upstreams`: with `max_fails=1` and the default")
    print("`fail_timeout=10s`, the three backends restarted within six seconds were all marked down at once.\n")
    print("| scenario | proxy | failed | answered | p99 µs | p99.9 µs | ejected after |")
    print("|---|---|---|---|---|---|---|")
    for f in fo:
        ej = f"{f[3]} ms" if f[0] == "kill" and f[3] not in ("n/a", "never") else ("–" if f[0] != "kill" or f[3] == "n/a" else "never")
        print(f"| {'SIGKILL one of three' if f[0] == 'kill' else 'rolling restart'} | {f[1]} | {field(f, 'failed', int)} | {field(f, 'ok', int)} | {field(f, 'p99', int)} | {field(f, 'p999', int)} | {ej} |")
    print()

# --- registry vs etcd --------------------------------------------------------------
def store_medians(rows):
    """Medians of one store's registry runs (registrations, renewals, propagation)."""
    return dict(
        reg=statistics.median(field(f, "register_per_sec") for f in rows),
        renew=statistics.median(field(f, "renew_per_sec") for f in rows),
        p50=statistics.median(field(f, "p50_us") for f in rows),
        p99=statistics.median(field(f, "p99_us") for f in rows),
        missed=sum(field(f, "missed", int) for f in rows),
        runs=len(rows),
    )

reg = lines("registry.txt")
if reg:
    stores = ["switchyard", "etcd-nofsync", "etcd-fsync"]
    agg = {}
    for s in stores:
        rows = [f for f in reg if f[0] == "registry" and f[1] == s]
        mem = next((f for f in reg if f[0] == "memory" and f[1] == s), None)
        if not rows:
            continue
        agg[s] = dict(
            store_medians(rows),
            n=field(mem, "instances", int) if mem else 0,
            mem=(field(mem, "rss_after_kb") - field(mem, "rss_before_kb")) * 1024 / field(mem, "instances") if mem else 0,
        )
    print("## Registry vs etcd\n")
    print("`bench-registry` (10 HTTP/2 connections). A registration is what a service does to announce itself: Switchyard's")
    print("`Register` (a new lease with the instance on it, one call) against etcd's `LeaseGrant` + `Put` (a ~110-byte JSON")
    print("value carrying the same facts, on the lease); 64 concurrent callers. Renewals: 1,000 leases renewed over one")
    print("pipelined keep-alive stream per connection. Propagation: 1,000 watch streams on the 10 connections, then one")
    print("registration at a time; the figure is the time until the *last* watcher has it (etcd's clock starts before")
    print("its `Put`, after its `LeaseGrant`). Memory: resident set growth of a fresh server after 100,000")
    print("registrations (one lease each).\n")
    print("Debian's etcd is 3.4, which has no `--unsafe-no-fsync`; \"etcd-nofsync\" keeps its data directory on tmpfs")
    print("(`/dev/shm`), where fsync returns at once: the same non-durable setting. \"etcd-fsync\" writes to the disk.")
    print("Switchyard's registry keeps registrations in memory by design (instances re-register after a restart; only")
    print("operator overrides are durable), so the no-fsync etcd is the like-for-like peer. Renewals are pipelined")
    print("over the streams and tonic batches them; a Switchyard renewal is a map lookup and a deadline update (etcd's")
    print("side was not profiled).\n")
    print("| store | registrations/s | renewals/s | propagation p50 µs | p99 µs | missed | bytes per instance |")
    print("|---|---|---|---|---|---|---|")
    for s, a in agg.items():
        print(f"| {s} | {a['reg']:.0f} | {a['renew']:.0f} | {a['p50']:.0f} | {a['p99']:.0f} | {a['missed']} | {a['mem']:.0f} |")
    print()
    if "switchyard" in agg and "etcd-nofsync" in agg:
        sy, ed = agg["switchyard"], agg["etcd-nofsync"]
        print(f"registry/etcd registration ratio: {sy['reg'] / ed['reg']:.2f}")
        print(f"registry/etcd renewal ratio: {sy['renew'] / ed['renew']:.2f}")
        print(f"registry/etcd propagation p99 ratio: {sy['p99'] / max(ed['p99'], 1):.2f}")
        if "etcd-fsync" in agg:
            print(f"registry/etcd-fsync registration ratio: {sy['reg'] / agg['etcd-fsync']['reg']:.2f}")
        print(f"registry memory per instance: {sy['mem']:.0f} bytes (target ≤ 2048)")
    print()

# --- upstream TLS: gateway and nginx to the same TLS backends (issue 21) -------
ut = [f for f in lines("upstream-tls.txt") if f[0] == "upstream-tls"]
if ut:
    print("## Upstream TLS\n")
    print("`bench/run.sh upstream-tls`: the gateway and nginx each proxying HTTP/1.1 to the same three TLS backends")
    print("(one nginx on CPU 0 answering 1 KiB over TLS 1.3 with a client certificate required), each checking the")
    print("backends' certificate against the CA and presenting its own, keep-alive to the backends; both proxies on CPU 1")
    print(f"at once, each offered {field(ut[0], 'rate', int):,} requests/s by its own generator on CPU 0, {len(ut)} runs of {secs} s.\n")
    print("| run | nginx µs | gateway µs | gateway/nginx | failed (nginx, gateway) |")
    print("|---|---|---|---|---|")
    ratios = []
    for f in ut:
        n, g = field(f, "nginx"), field(f, "gateway")
        ratios.append(g / n)
        print(f"| {field(f, 'run', int)} | {n:.2f} | {g:.2f} | {g / n:.2f} | {field(f, 'nginx_failed', int)}, {field(f, 'gateway_failed', int)} |")
    print()
    print(f"gateway/nginx upstream tls cpu per request ratio: {statistics.median(ratios):.2f}")
    print()

# --- the registry with mutual TLS against plaintext (issue 21) -------------------
mt = lines("registry-mtls.txt")
if mt:
    agg = {}
    for mode in ["plaintext", "mtls"]:
        rows = [f for f in mt if f[0] == "registry-mtls" and f[1] == mode]
        if rows:
            agg[mode] = dict(
                reg=statistics.median(field(f, "register_per_sec") for f in rows),
                # Older runs had no renewals.
                renew=statistics.median(field(f, "renew_per_sec") for f in rows) if "renew_per_sec" in rows[0] else 0,
                p50=statistics.median(field(f, "p50_us") for f in rows),
                p99=statistics.median(field(f, "p99_us") for f in rows),
                missed=sum(field(f, "missed", int) for f in rows),
                runs=len(rows),
            )
    print("## The registry with mutual TLS\n")
    print("`bench/run.sh registry-mtls`: the same registry with mutual TLS 1.3 (the development CA of")
    print("`switchyard-certs`, ECDSA P-256, TLS_AES_128_GCM_SHA256) and in plaintext, interleaved run by run, on CPU 1;")
    print("`bench-registry` on CPU 0 as the operator: 64 concurrent registrations over 10 long-lived HTTP/2 connections,")
    print("and propagation of one registration at a time to 1,000 watch streams; renewals of 1,000 leases over the same")
    print("connections as the service `renew` that holds them (with mTLS its identity is checked against each lease).\n")
    print("| registry | registrations/s | renewals/s | propagation p50 µs | p99 µs | missed | runs |")
    print("|---|---|---|---|---|---|---|")
    for mode, a in agg.items():
        print(f"| {mode} | {a['reg']:.0f} | {a['renew']:.0f} | {a['p50']:.0f} | {a['p99']:.0f} | {a['missed']} | {a['runs']} |")
    print()
    if {"plaintext", "mtls"} <= agg.keys():
        pt, tl = agg["plaintext"], agg["mtls"]
        print(f"registry mtls/plaintext registration ratio: {tl['reg'] / pt['reg']:.2f}")
        if pt["renew"]:
            print(f"registry mtls/plaintext renewal ratio: {tl['renew'] / pt['renew']:.2f}")
        print(f"registry mtls/plaintext propagation p99 ratio: {tl['p99'] / max(pt['p99'], 1):.2f}")
    print()

# --- the registry on etcd vs etcd itself (issue 18) ----------------------------
ha = lines("registry-ha.txt")
if ha:
    agg = {}
    for s in ["switchyard-ha", "etcd-cluster"]:
        rows = [f for f in ha if f[0] == "registry-ha" and f[1] == s]
        if rows:
            agg[s] = store_medians(rows)
    print("## The registry on etcd vs etcd itself (three members)\n")
    print("`bench/run.sh registry-ha`: three etcd 3.4 members on tmpfs on loopback, pinned with the three registry")
    print("replicas (`--store etcd`) to CPU 1; `bench-registry` on CPU 0 spreads its 10 HTTP/2 connections over the three")
    print("replicas, or over the three members for etcd itself doing the same work on the same members (the workloads")
    print("of the table above: 64 concurrent registrations, 1,000 leases renewed, 1,000 watchers). A registration on")
    print("the replicas is one compare-and-set transaction for a lease record and the instance, and concurrent ones share")
    print("a transaction (group commit); a renewal is a map lookup on the replica that keeps the lease; propagation")
    print("goes etcd -> each replica's one watch -> its watchers, one hop more than etcd's own watchers.\n")
    print("| store | registrations/s | renewals/s | propagation p50 µs | p99 µs | missed | runs |")
    print("|---|---|---|---|---|---|---|")
    for s, a in agg.items():
        print(f"| {s} | {a['reg']:.0f} | {a['renew']:.0f} | {a['p50']:.0f} | {a['p99']:.0f} | {a['missed']} | {a['runs']} |")
    print()
    if "switchyard-ha" in agg and "etcd-cluster" in agg:
        sy, ed = agg["switchyard-ha"], agg["etcd-cluster"]
        print(f"registry-ha/etcd registration ratio: {sy['reg'] / ed['reg']:.2f}")
        print(f"registry-ha/etcd renewal ratio: {sy['renew'] / ed['renew']:.2f}")
        print(f"registry-ha/etcd propagation p99 ratio: {sy['p99'] / max(ed['p99'], 1):.2f}")
    print()

# --- as users run proxies: shared cores, default workers (issue 20) ---------------
def shared_table(name, title, ratio_line):
    rows = {f[0]: {f[i]: float(f[i + 1]) for i in range(1, len(f) - 1, 2)} for f in lines(name)}
    if not {"nginx", "gateway"} <= rows.keys():
        return
    print(f"### {title}\n")
    print("| proxy | requests/s | CPU µs per request | context switches per request | per second | errors | runs |")
    print("|---|---|---|---|---|---|---|")
    for n, v in rows.items():
        print(f"| {n} | {v['rps']:,.0f} | {v['cpu_us']:.1f} | {v['ctx_per_req']:.3f} | {v['ctx_per_sec']:,.0f} | {v['errors']:.0f} | {v['runs']:.0f} |")
    print()
    g, n = rows["gateway"], rows["nginx"]
    print(f"{ratio_line}: {g['rps'] / n['rps']:.2f}")
    print(f"{ratio_line.replace('throughput', 'cpu per request')}: {g['cpu_us'] / n['cpu_us']:.2f}")
    print()

if lines("shared.txt") or lines("shared-logged.txt") or lines("idle.txt"):
    print("## As users run proxies: shared cores, default worker counts\n")
    print("`bench/run.sh shared` (`ACCESS_LOG=true` for the second table): nginx (`worker_processes auto`), HAProxy")
    print("(its default threads) and the gateway (its default runtime) unpinned; the proxy, the three backends (1 KiB")
    print("answers) and `wrk -t2 -c64` share the two cores. Runs interleave the proxies; medians. CPU per request is the")
    print("proxy's processes' user + system time; context switches are voluntary and involuntary, all its threads.\n")
    shared_table("shared.txt", "Access logs off", "gateway/nginx shared-core throughput ratio")
    shared_table("shared-logged.txt", "Access logs on (nginx's to a file, the gateway's JSON lines to a file)",
                 "gateway/nginx shared-core throughput ratio, access log on")
idle = {f[1]: f for f in lines("idle.txt") if f[0] == "idle"}
if idle:
    print("### Memory with idle keep-alive connections\n")
    print("`bench/run.sh idle`: each proxy with its default worker count; `IDLE_CONNS` client connections (10,000)")
    print("each make one request and stay open (bench/idle_clients.py); resident memory of the proxy's processes")
    print("(nginx: master and workers summed) before and with them.\n")
    print("| proxy | connections | answered | RSS before (MB) | RSS with them (MB) | bytes per connection |")
    print("|---|---|---|---|---|---|")
    for n, f in idle.items():
        print(f"| {n} | {field(f, 'conns', int):,} | {f[5]} | {field(f, 'rss_before_kb') / 1024:.1f} | {field(f, 'rss_kb') / 1024:.1f} | {field(f, 'per_conn_bytes', int):,} |")
    print()
    if {"nginx", "gateway"} <= idle.keys():
        print(f"gateway/nginx idle connection memory ratio: {field(idle['gateway'], 'rss_kb') / field(idle['nginx'], 'rss_kb'):.2f}")
        print()

profile = os.path.join(here, "PROFILE.md")
if os.path.exists(profile):
    print(open(profile).read())
