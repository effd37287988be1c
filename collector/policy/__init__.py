"""Policy sandbox: what a tariff, demand response, efficiency or EV programme would do to load.

Public API (also behind the API route, the CLI, Tableau sliders and the TabPy endpoint)::

    from collector.policy import run_sandbox, scenario_from_params, PolicyError
    result = run_sandbox(load_frame, {"tou_share": 0.2, "efficiency_pct": 5, "ev_vehicles": 300})
    result.summary      # one row per region: peak, energy, cost and CO2 before and after
"""

from collector.policy.sandbox import (
    DemandResponse,
    EVAdoption,
    Efficiency,
    PolicyError,
    RegionPolicy,
    SandboxResult,
    Scenario,
    Tariff,
    TimeOfUseShift,
    apply_scenario,
    day_profile_after,
    load_after_for_rows,
    run_sandbox,
    sandbox_with_stored_intensity,
    scenario_from_params,
    PARAMETERS,
)

__all__ = ["DemandResponse", "EVAdoption", "Efficiency", "PolicyError", "RegionPolicy", "SandboxResult", "Scenario",
           "Tariff", "sandbox_with_stored_intensity",
           "TimeOfUseShift", "apply_scenario", "day_profile_after", "load_after_for_rows", "run_sandbox", "scenario_from_params",
           "PARAMETERS"]
