-- wrk: GET segment-000.m4s … segment-<BENCH_SEGMENTS-1>.m4s of the URL's directory in turn,
-- keeping its query (the token), as a player walks a rendition.
dofile((debug.getinfo(1, 'S').source:match('^@(.*/)') or './') .. 'report.lua')
local count = tonumber(os.getenv('BENCH_SEGMENTS'))
local dir, query
local n = 0
init = function(args)
  dir, query = wrk.path:match('^(.*/)[^/?]*(%??.*)$')
end
request = function()
  n = n + 1
  return wrk.format('GET', string.format('%ssegment-%03d.m4s%s', dir, n % count, query))
end
