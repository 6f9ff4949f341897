-- wrk: GET each of BENCH_NAMES (comma-separated file names) of the URL's directory in turn,
-- keeping its query (the token), as a player walks a rendition.
dofile((debug.getinfo(1, 'S').source:match('^@(.*/)') or './') .. 'report.lua')
local names = {}
for name in string.gmatch(os.getenv('BENCH_NAMES'), '[^,]+') do names[#names + 1] = name end
local dir, query
local n = 0
init = function(args)
  dir, query = wrk.path:match('^(.*/)[^/?]*(%??.*)$')
end
request = function()
  n = n + 1
  return wrk.format('GET', dir .. names[n % #names + 1] .. query)
end
