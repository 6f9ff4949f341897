-- wrk: POST the JSON body in BENCH_BODY (optional header BENCH_USER as X-PulseVault-User).
dofile((debug.getinfo(1, 'S').source:match('^@(.*/)') or './') .. 'report.lua')
wrk.method = 'POST'
wrk.body = os.getenv('BENCH_BODY')
wrk.headers['Content-Type'] = 'application/json'
local user = os.getenv('BENCH_USER')
if user then wrk.headers['X-PulseVault-User'] = user end
