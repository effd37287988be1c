"""Provisioning a fleet on the technician's workstation: fleet CA, gateway identities, broker
accounts and ACL, meter bindings and flashable bundles. Works offline once the fleet workspace
exists. The gateway-side steps (enrollment, doctor) live in ``edge_agent``; ``gridsight provision``
reaches them so a technician has one command.
"""
