-- wrk: POST the JSON body in BENCH_BODY (optional Authorization header in BENCH_AUTHORIZATION).
dofile((debug.getinfo(1, 'S').source:match('^@(.*/)') or './') .. 'report.lua')
wrk.method = 'POST'
wrk.body = os.getenv('BENCH_BODY')
wrk.headers['Content-Type'] = 'application/json'
local authorization = os.getenv('BENCH_AUTHORIZATION')
if authorization then wrk.headers['Authorization'] = authorization end
