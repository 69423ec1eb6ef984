-- ArgoCD health of a KubeRay RayCluster (KubeRay v1.x): ArgoCD ships none for ray.io kinds.
-- From KubeRay's status conditions where it writes them (the RayClusterStatusConditions feature gate,
-- on by default in v1.6), else from its state. status.observedGeneration is not read: KubeRay v1.6.1
-- does not keep it current (a spec write that changes no status field leaves it at the previous
-- generation; its InconsistentRayClusterStatus ignores the field), so a check on it stuck rolled
-- clusters at Progressing for minutes. Readiness comes from the pods KubeRay counts instead.
local hs = {}
local status = obj.status
if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for KubeRay to report status"
  return hs
end

local conditions = {}
if status.conditions ~= nil then
  for _, c in ipairs(status.conditions) do
    conditions[c.type] = c
  end
end
local function isTrue(t)
  return conditions[t] ~= nil and conditions[t].status == "True"
end
local function workers()
  return (status.readyWorkerReplicas or 0) .. "/" .. (status.desiredWorkerReplicas or 0) .. " workers ready"
end

if isTrue("ReplicaFailure") then
  hs.status = "Degraded"
  hs.message = conditions["ReplicaFailure"].message or "KubeRay failed to create or delete pods"
  return hs
end
if status.state == "failed" then
  hs.status = "Degraded"
  hs.message = status.reason or "The RayCluster failed"
  return hs
end
if isTrue("RayClusterSuspended") or status.state == "suspended" then
  hs.status = "Suspended"
  hs.message = "The RayCluster is suspended"
  return hs
end
if isTrue("RayClusterSuspending") then
  hs.status = "Progressing"
  hs.message = "Suspending the RayCluster"
  return hs
end
local headReady
if conditions["HeadPodReady"] ~= nil then
  headReady = isTrue("HeadPodReady")
else
  headReady = status.state == "ready"
end
if not headReady then
  hs.status = "Progressing"
  hs.message = "Waiting for the head pod to be ready; " .. workers()
  return hs
end
if (status.readyWorkerReplicas or 0) < (status.desiredWorkerReplicas or 0) then
  hs.status = "Progressing"
  hs.message = workers()
  return hs
end
hs.status = "Healthy"
hs.message = "Head ready, " .. workers()
return hs
