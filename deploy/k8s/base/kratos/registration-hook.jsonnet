// Body of the registration web hook Kratos sends to ProManage
// (POST /v1/hooks/kratos/registration): the new identity's id, traits and
// updated_at (ProManage applies a delivery only if it is newer than what it
// holds, so retries and reordering are harmless).
function(ctx) {
  identity_id: ctx.identity.id,
  traits: ctx.identity.traits,
  updated_at: ctx.identity.updated_at,
}
