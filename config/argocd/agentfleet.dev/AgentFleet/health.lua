-- ArgoCD health of an AgentFleet, from the conditions its operator computes from what it observes.
-- A status that has not caught up with the spec (observedGeneration < generation) says nothing
-- about the spec Git holds now: it is Progressing until it does.
local hs = {}
local generation = obj.metadata.generation
local status = obj.status

if status == nil or status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the AgentFleet operator to report status"
  return hs
end
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the AgentFleet operator to observe generation " .. generation
  return hs
end

local conditions = {}
for _, c in ipairs(status.conditions) do
  if generation == nil or c.observedGeneration == nil or c.observedGeneration >= generation then
    conditions[c.type] = c
  end
end
local function isTrue(t)
  return conditions[t] ~= nil and conditions[t].status == "True"
end
local function message(t, default)
  if conditions[t] ~= nil and conditions[t].message ~= nil and conditions[t].message ~= "" then
    return conditions[t].message
  end
  return default
end

if isTrue("Degraded") then
  hs.status = "Degraded"
  hs.message = message("Degraded", "The fleet is degraded")
  return hs
end
if obj.spec ~= nil and obj.spec.suspend == true then
  if isTrue("Progressing") then
    hs.status = "Progressing"
    hs.message = message("Progressing", "Suspending")
  else
    hs.status = "Suspended"
    hs.message = message("Ready", "The fleet is suspended")
  end
  return hs
end
if isTrue("Ready") then
  hs.status = "Healthy"
  hs.message = message("Ready", "All agent workers are ready")
  return hs
end
hs.status = "Progressing"
hs.message = message("Progressing", message("Ready", "Waiting for the fleet to be ready"))
return hs
