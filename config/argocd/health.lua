-- Argo CD health check for Portcullis's kinds (registry.portcullis.dev: Registry, RepositoryPolicy,
-- ImageAttestation). Install it with config/argocd/README.md; internal/controller/health_test.go runs
-- it against objects written by the controllers.
--
-- The controllers follow kstatus: Ready, Reconciling and Stalled conditions, each stamped with the
-- generation it is about, and status.observedGeneration (-1 until the first final outcome). Only
-- conditions about the current generation count. The mapping:
--   Stalled=True (the spec or a referenced object must change) -> Degraded
--   Reconciling=True and Ready=False (a failure being retried, e.g. the registry is unreachable)
--                                                        -> Degraded
--   observedGeneration behind metadata.generation         -> Progressing
--   spec.suspend: true, observed                         -> Suspended
--   Reconciling=True otherwise (work in progress)        -> Progressing
--   Ready=True                                           -> Healthy (for an image: its verdict is
--                                                           current, compliant or not; compliance is
--                                                           the PolicyCompliant condition)
local hs = { status = "Progressing", message = "Waiting for the Portcullis controller" }
local generation = obj.metadata.generation

-- condition returns the condition of type t if it is about the current generation.
local function condition(t)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == t then
      if generation ~= nil and c.observedGeneration ~= nil and c.observedGeneration < generation then
        return nil
      end
      return c
    end
  end
  return nil
end

local function describe(c)
  local msg = c.reason or ""
  if c.message ~= nil and c.message ~= "" then
    msg = msg .. ": " .. c.message
  end
  return msg
end

if obj.status == nil then
  return hs
end

local ready = condition("Ready")
local reconciling = condition("Reconciling")
local stalled = condition("Stalled")
if stalled ~= nil and stalled.status == "True" then
  return { status = "Degraded", message = describe(stalled) }
end
if reconciling ~= nil and reconciling.status == "True" and ready ~= nil and ready.status == "False" then
  return { status = "Degraded", message = describe(ready) }
end
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.message = "Waiting for the controller to observe generation " .. generation
  if reconciling ~= nil and reconciling.status == "True" then
    hs.message = describe(reconciling)
  end
  return hs
end
if obj.spec ~= nil and obj.spec.suspend == true then
  return { status = "Suspended", message = "spec.suspend is true" }
end
if reconciling ~= nil and reconciling.status == "True" then
  return { status = "Progressing", message = describe(reconciling) }
end
if ready ~= nil and ready.status == "True" then
  return { status = "Healthy", message = describe(ready) }
end
if ready ~= nil and ready.status == "False" then
  return { status = "Degraded", message = describe(ready) }
end
return hs
