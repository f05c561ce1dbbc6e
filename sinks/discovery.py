"""The discovery tables (storage's part): their DDL. The code that fills them is
``outloop.projections.discovery`` and ``outloop.projections.recommendations``."""

DDL = """
CREATE TABLE recommendations (
    id VARCHAR PRIMARY KEY,             -- 'rec-' + digest of kind and key: stable across runs
    kind VARCHAR NOT NULL,              -- tool | macro | context | rule
    key VARCHAR NOT NULL, title VARCHAR NOT NULL, priority VARCHAR NOT NULL, rank INTEGER,
    current BOOLEAN NOT NULL,           -- passed the thresholds in the latest analysis
    as_of TIMESTAMPTZ NOT NULL,         -- the data's watermark the window ends at
    window_start TIMESTAMPTZ NOT NULL, window_end TIMESTAMPTZ NOT NULL,
    occurrences BIGINT NOT NULL, measured BIGINT NOT NULL, sessions BIGINT NOT NULL, occurrences_30d DOUBLE,
    tokens_per_occurrence DOUBLE, tokens_p10 BIGINT, tokens_p90 BIGINT, usd_per_occurrence DOUBLE,
    monthly_tokens BIGINT, monthly_savings_usd DOUBLE NOT NULL, monthly_low_usd DOUBLE, monthly_high_usd DOUBLE,
    build_cost_usd DOUBLE NOT NULL, payback_months DOUBLE, roi_pct DOUBLE,
    suggestion VARCHAR, criteria JSON, evidence JSON, basis VARCHAR NOT NULL, price_version VARCHAR, config JSON);
CREATE TABLE recommendation_occurrences (  -- the occurrences behind a recommendation's figures
    rec_id VARCHAR NOT NULL, ref VARCHAR NOT NULL,   -- tool_use_id, usage id, or session:file
    session_id VARCHAR, "at" TIMESTAMPTZ, tokens BIGINT, usd DOUBLE, PRIMARY KEY (rec_id, ref));
CREATE TABLE recommendation_feedback (
    id VARCHAR PRIMARY KEY,             -- '<rec_id>:<n>'
    rec_id VARCHAR NOT NULL, action VARCHAR NOT NULL,   -- accept | reject | filed
    "at" TIMESTAMPTZ NOT NULL, rule VARCHAR, projected_monthly_usd DOUBLE, url VARCHAR, note VARCHAR);
CREATE OR REPLACE VIEW v_recommendations AS
SELECT r.*, coalesce(f.action, 'open') AS status, f.url AS filed_url
FROM recommendations r LEFT JOIN (
    SELECT rec_id, arg_max(action, "at") FILTER (WHERE action <> 'filed') AS action,
           arg_max(url, "at") FILTER (WHERE action = 'filed') AS url
    FROM recommendation_feedback GROUP BY rec_id) f ON f.rec_id = r.id;
"""
