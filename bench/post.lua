-- wrk script: POST the JSON body found in the file named by BENCH_BODY.
local file = io.open(os.getenv("BENCH_BODY"), "r")
wrk.method = "POST"
wrk.body = file:read("*a")
wrk.headers["Content-Type"] = "application/json"
file:close()
