-- wrk script: exactly <jobs> POST /jobs over all threads, each job with a name of its own, then idle.
--
--     wrk -t THREADS -c CONNECTIONS -d LIMIT -s bench/post_jobs.lua URL -- JOBS THREADS NAME_PREFIX
--
-- wrk runs for its whole -d, whatever the script does: each thread prints "post_jobs thread N done ..." once
-- its share of the jobs is answered, and the bench interrupts wrk (SIGINT) when every thread has. A connection
-- whose thread has sent its share waits (delay) instead of sending more. wrk calls request() once before the
-- threads start, to check the request it builds, and never sends what it got: each thread's first request is
-- a GET /health, so that this check uses up no job. The last line (done) sums the answers: 201 Created,
-- other statuses of a POST, and /health answers.

local threads = {}
local next_id = 1

function setup(thread)
    thread:set("id", next_id)
    next_id = next_id + 1
    table.insert(threads, thread)
end

function init(args)
    local jobs, thread_count = tonumber(args[1]), tonumber(args[2])
    prefix = args[3]
    share = math.floor(jobs / thread_count) + ((id <= jobs % thread_count) and 1 or 0)
    sent, created, failed, health = 0, 0, 0, 0
    headers = { ["Content-Type"] = "application/json" }
    checked = false
    if share == 0 then
        io.write(string.format("post_jobs thread %d done created 0 failed 0\n", id))
        io.stdout:flush()
    end
end

-- Idle connections are parked far beyond any run: the bench interrupts wrk long before.
local PARKED_MS = 3600000

function delay()
    if sent < share then
        return 0
    end
    return PARKED_MS
end

function request()
    if not checked then
        checked = true
        return wrk.format("GET", "/health")
    end
    if sent < share then
        sent = sent + 1
        local body = string.format('{"jobName":"%s-%d-%d","arguments":[]}', prefix, id, sent)
        return wrk.format("POST", "/jobs", headers, body)
    end
    return wrk.format("GET", "/health")
end

function response(status, response_headers, body)
    if status == 201 then
        created = created + 1
    elseif status == 200 then
        health = health + 1
        return
    else
        failed = failed + 1
    end
    if created + failed == share then
        io.write(string.format("post_jobs thread %d done created %d failed %d\n", id, created, failed))
        io.stdout:flush()
    end
end

function done(summary, latency, requests)
    local created_total, failed_total, health_total = 0, 0, 0
    for _, thread in ipairs(threads) do
        created_total = created_total + thread:get("created")
        failed_total = failed_total + thread:get("failed")
        health_total = health_total + thread:get("health")
    end
    io.write(string.format("post_jobs total created %d failed %d health %d\n", created_total, failed_total,
        health_total))
end
