"""Provisioning gateways in the field: fleet CA, gateway identities, broker accounts and ACL,
meter bindings, flashable bundles, enrollment and the on-gateway doctor.

Works offline once the fleet workspace exists; only enrollment talks to the collector.
"""
