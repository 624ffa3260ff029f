-- The source document's my-poc-send2kafka.lua, as close as Debian's packages allow: the
-- library is lua-resty-kafka 0.07 from package lua-nginx-kafka, whose module path is
-- nginx.kafka.producer; the broker list points at the benchmark's broker (run.py fills it in).
local producer = require("nginx.kafka.producer")
local json = require("cjson")
local broker_list = {
    {host = "@BROKER_HOST@", port = @BROKER_PORT@}
}
local log_json = {}
log_json["body"] = ngx.req.read_body()
log_json["body_data"] = ngx.req.get_body_data()
local topic = ngx.req.get_headers()["topic"]
local producer_error_handle = function(topic, partition_id, queue, index, err, retryable)
    ngx.log(ngx.ERR, "Error handle: index ", index, ' partition_id ', partition_id, ' retryable ', retryable, ' json ', json.encode(queue))
end
local bp = producer:new(broker_list, { producer_type = "async", batch_num = 200, error_handle = producer_error_handle})
local sendMsg = json.encode(log_json)
local ok, err = bp:send(topic, nil, sendMsg)
