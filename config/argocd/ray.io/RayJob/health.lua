-- ArgoCD health of a KubeRay RayJob (KubeRay v1.x): ArgoCD ships none for ray.io kinds.
-- jobDeploymentStatus is KubeRay's lifecycle of the RayJob; jobStatus is Ray's status of the job.
local hs = {}
local status = obj.status
if status == nil or status.jobDeploymentStatus == nil or status.jobDeploymentStatus == "" then
  hs.status = "Progressing"
  hs.message = "Waiting for KubeRay to start the job"
  return hs
end

local deployment = status.jobDeploymentStatus
local job = status.jobStatus or ""
local function withMessage(text)
  if status.message ~= nil and status.message ~= "" then
    return text .. ": " .. status.message
  end
  return text
end

if deployment == "Failed" or deployment == "ValidationFailed" then
  hs.status = "Degraded"
  hs.message = withMessage("The RayJob failed" .. (status.reason ~= nil and (" (" .. status.reason .. ")") or ""))
  return hs
end
if deployment == "Complete" then
  if job == "SUCCEEDED" then
    hs.status = "Healthy"
    hs.message = "The job succeeded"
  else
    hs.status = "Degraded"
    hs.message = withMessage("The job ended " .. job)
  end
  return hs
end
if deployment == "Suspended" then
  hs.status = "Suspended"
  hs.message = "The RayJob is suspended"
  return hs
end
hs.status = "Progressing"
if job ~= "" then
  hs.message = withMessage("RayJob " .. deployment .. ", job " .. job)
else
  hs.message = withMessage("RayJob " .. deployment)
end
return hs
