module github.com/agentfleet/agentfleet/api/heartbeat

go 1.22
