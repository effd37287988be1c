"""Meter channels: export, tariffs, per-phase values and gas/water/heat sub-meters (readings layout 2).

Revision ID: 0006_meter_channels
Revises: 0005_region_rollups

Raw readings gain the wire's layout-2 columns (gridsight/wire.py ``READING_EXTENSIONS``):
export and tariff registers, the active tariff, per-phase voltage/current/power, demand, and
``channel`` for the sub-meters a meter relays (gas, water, heat), each under its own meter id.
A gas or water reading has a volume and no energy, so ``energy_kwh`` may be null there, and only
there (a CHECK). Interval summaries gain the interval's exported energy.

Three ``tableau`` views bind to them (columns only ever added):
``energy_balance`` (import, export and net energy per meter interval, for PV homes),
``phase_voltage`` (three-phase meters' per-phase values: phase loss and sags per feeder) and
``meter_channels`` (gas, water and heat readings).
"""

from alembic import op

revision = "0006_meter_channels"
down_revision = "0005_region_rollups"
branch_labels = None
depends_on = None

_PLACE = """
    JOIN tableau.meter_places p ON p.meter_id = {alias}.meter_id
"""

UPGRADE = f"""
ALTER TABLE readings
    ALTER COLUMN energy_kwh DROP NOT NULL,
    ADD COLUMN export_kwh double precision,
    ADD COLUMN import_t1_kwh double precision,
    ADD COLUMN import_t2_kwh double precision,
    ADD COLUMN export_t1_kwh double precision,
    ADD COLUMN export_t2_kwh double precision,
    ADD COLUMN tariff smallint,
    ADD COLUMN voltage_l1_v double precision,
    ADD COLUMN voltage_l2_v double precision,
    ADD COLUMN voltage_l3_v double precision,
    ADD COLUMN current_l1_a double precision,
    ADD COLUMN current_l2_a double precision,
    ADD COLUMN current_l3_a double precision,
    ADD COLUMN power_l1_w double precision,
    ADD COLUMN power_l2_w double precision,
    ADD COLUMN power_l3_w double precision,
    ADD COLUMN demand_w double precision,
    ADD COLUMN demand_peak_w double precision,
    ADD COLUMN channel text CHECK (channel IN ('gas', 'water', 'heat')),
    ADD COLUMN volume_m3 double precision,
    ADD CONSTRAINT readings_energy_or_volume CHECK (energy_kwh IS NOT NULL OR channel IN ('gas', 'water'));
ALTER TABLE interval_summaries ADD COLUMN export_kwh double precision;

CREATE VIEW tableau.energy_balance AS
SELECT s.meter_id, p.region, p.feeder, p.area_type, s.interval_start,
       s.kwh AS import_kwh, COALESCE(s.export_kwh, 0) AS export_kwh,
       s.kwh - COALESCE(s.export_kwh, 0) AS net_kwh,
       (s.export_kwh IS NOT NULL) AS has_export_register
FROM interval_summaries s
{_PLACE.format(alias="s")};
COMMENT ON VIEW tableau.energy_balance IS
    'Imported, exported and net energy per meter interval (PV homes export; net < 0 is a net producer).';

CREATE VIEW tableau.phase_voltage AS
SELECT r.meter_id, p.region, p.feeder, r.ts,
       r.voltage_l1_v, r.voltage_l2_v, r.voltage_l3_v,
       r.current_l1_a, r.current_l2_a, r.current_l3_a,
       r.power_l1_w, r.power_l2_w, r.power_l3_w,
       LEAST(r.voltage_l1_v, r.voltage_l2_v, r.voltage_l3_v) AS lowest_phase_v,
       r.tariff
FROM readings r
{_PLACE.format(alias="r")}
WHERE r.channel IS NULL AND r.voltage_l2_v IS NOT NULL;
COMMENT ON VIEW tableau.phase_voltage IS
    'Per-phase voltage, current and power of three-phase meters; a phase near 0 V is a lost phase.';

CREATE VIEW tableau.meter_channels AS
SELECT r.meter_id, p.region, p.feeder, r.channel, r.ts, r.volume_m3, r.energy_kwh
FROM readings r
{_PLACE.format(alias="r")}
WHERE r.channel IS NOT NULL;
COMMENT ON VIEW tableau.meter_channels IS
    'Gas and water (m3) and heat (kWh) sub-meter readings, each its own meter.';
"""

DOWNGRADE = """
DROP VIEW IF EXISTS tableau.meter_channels;
DROP VIEW IF EXISTS tableau.phase_voltage;
DROP VIEW IF EXISTS tableau.energy_balance;
ALTER TABLE interval_summaries DROP COLUMN IF EXISTS export_kwh;
DELETE FROM readings WHERE energy_kwh IS NULL;
ALTER TABLE readings
    DROP CONSTRAINT IF EXISTS readings_energy_or_volume,
    DROP COLUMN IF EXISTS export_kwh, DROP COLUMN IF EXISTS import_t1_kwh, DROP COLUMN IF EXISTS import_t2_kwh,
    DROP COLUMN IF EXISTS export_t1_kwh, DROP COLUMN IF EXISTS export_t2_kwh, DROP COLUMN IF EXISTS tariff,
    DROP COLUMN IF EXISTS voltage_l1_v, DROP COLUMN IF EXISTS voltage_l2_v, DROP COLUMN IF EXISTS voltage_l3_v,
    DROP COLUMN IF EXISTS current_l1_a, DROP COLUMN IF EXISTS current_l2_a, DROP COLUMN IF EXISTS current_l3_a,
    DROP COLUMN IF EXISTS power_l1_w, DROP COLUMN IF EXISTS power_l2_w, DROP COLUMN IF EXISTS power_l3_w,
    DROP COLUMN IF EXISTS demand_w, DROP COLUMN IF EXISTS demand_peak_w,
    DROP COLUMN IF EXISTS channel, DROP COLUMN IF EXISTS volume_m3,
    ALTER COLUMN energy_kwh SET NOT NULL;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
