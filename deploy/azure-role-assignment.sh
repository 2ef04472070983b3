#!/bin/sh
# Least privilege for the agent's Azure identity (a VM's or Arc server's
# managed identity, or a service principal): the built-in role "Key Vault
# Secrets User" reads secret values and their properties (agent doctor lists
# a secret's versions, never a value) and nothing else, scoped to each secret
# the agent's policy allows, or to the vault.
#
# Fill in the four values, review, then run it with an account that may
# assign roles on the vault (Owner or User Access Administrator).
set -eu

SUBSCRIPTION="00000000-0000-0000-0000-000000000000"
RESOURCE_GROUP="platform-rg"
VAULT="platform-kv"
# The principal (object) id of the agent's identity, for example:
#   az vm identity show --name agent-vm --resource-group platform-rg --query principalId -o tsv
PRINCIPAL_ID="11111111-1111-1111-1111-111111111111"
# The secrets the agent reads (its policy.secrets); empty: the whole vault.
SECRETS="gh-user gh-pat"

VAULT_ID="/subscriptions/$SUBSCRIPTION/resourceGroups/$RESOURCE_GROUP/providers/Microsoft.KeyVault/vaults/$VAULT"

if [ -z "$SECRETS" ]; then
  az role assignment create --role "Key Vault Secrets User" \
    --assignee-object-id "$PRINCIPAL_ID" --assignee-principal-type ServicePrincipal \
    --scope "$VAULT_ID"
else
  for s in $SECRETS; do
    az role assignment create --role "Key Vault Secrets User" \
      --assignee-object-id "$PRINCIPAL_ID" --assignee-principal-type ServicePrincipal \
      --scope "$VAULT_ID/secrets/$s"
  done
fi

# A vault that still uses access policies instead of Azure RBAC needs get
# (jobs) and list (agent doctor) on secrets, nothing more:
#   az keyvault set-policy --name "$VAULT" --object-id "$PRINCIPAL_ID" --secret-permissions get list
