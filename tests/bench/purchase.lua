-- wrk script: POST /v1/instances. MODE=fresh sends a new client token on
-- every request (the whole path: claim, sign, vendor call, record);
-- MODE=replay repeats one token (claim and replay only).
local mode = os.getenv("MODE") or "fresh"
local key = os.getenv("API_KEY")
counter = 0
statuses = {}
local threads = {}

function setup(thread)
	thread:set("tid", #threads + 1)
	thread:set("run", os.getenv("RUN_ID") or tostring(os.time()))
	table.insert(threads, thread)
end

function init(args)
	statuses = {}
end

local function body(token)
	return '{"client_token":"' .. token .. '","instance_type":"Basic",'
	    .. '"instance_name":"bench-registry","region":"cn-shanghai",'
	    .. '"default_oss_bucket":true,"period":1}'
end

function request()
	local token
	if mode == "replay" then
		token = "bench-replay-" .. run
	else
		counter = counter + 1
		token = "bench-" .. run .. "-" .. tid .. "-" .. counter
	end
	return wrk.format("POST", "/v1/instances", {
		["Content-Type"] = "application/json",
		["Authorization"] = "Bearer " .. key,
	}, body(token))
end

function response(status, headers, body)
	statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
	local counts = {}
	for _, thread in ipairs(threads) do
		local s = thread:get("statuses")
		for code, n in pairs(s) do
			counts[code] = (counts[code] or 0) + n
		end
	end
	local parts = {}
	for code, n in pairs(counts) do
		table.insert(parts, code .. "=" .. n)
	end
	table.sort(parts)
	io.write(string.format(
	    "RESULT mode=%s requests=%d rps=%.0f p50_ms=%.2f p99_ms=%.2f "
	    .. "max_ms=%.2f statuses=%s errors=%d\n",
	    mode, summary.requests,
	    summary.requests / (summary.duration / 1e6),
	    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
	    latency.max / 1000, table.concat(parts, ","),
	    summary.errors.connect + summary.errors.read +
	    summary.errors.write + summary.errors.status +
	    summary.errors.timeout))
end
