-- wrk script for bench/abuse.sh: one client joining as a new visitor on
-- every request (no cookie kept), as fast as it can.
wrk.method = "POST"
wrk.headers["Accept"] = "application/json"
