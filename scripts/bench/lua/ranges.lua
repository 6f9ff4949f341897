-- wrk: GET random BENCH_RANGE_BYTES-long ranges of a BENCH_FILE_SIZE-byte file.
dofile((debug.getinfo(1, 'S').source:match('^@(.*/)') or './') .. 'report.lua')
local size = tonumber(os.getenv('BENCH_FILE_SIZE'))
local len = tonumber(os.getenv('BENCH_RANGE_BYTES'))
local slots = math.floor(size / len)
request = function()
  local first = math.random(0, slots - 1) * len
  return wrk.format('GET', nil, { Range = 'bytes=' .. first .. '-' .. (first + len - 1) })
end
