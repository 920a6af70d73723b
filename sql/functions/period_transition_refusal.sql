-- Why a period may not go from p_from to p_to now, or NULL message when it may.
-- The one definition of the lifecycle's rules: the guard trigger on
-- gl.accounting_period enforces them on every change, and the procedures ask
-- first, so that they refuse before doing any work. NULL p_from is the
-- creation of the row, NULL p_to its deletion.
--   the transition is in gl.period_transition;
--   closing needs every earlier period closed, the latest of them sealed
--     (closes are sequential: opening balances carry from the period before);
--   reopening needs no later period closed (its opening came from this one);
--   locking needs every earlier period locked;
--   a period is not created before a closed one.
-- The hint says what to do, with the `monthend period` command that does it.
CREATE OR REPLACE FUNCTION gl.period_transition_refusal(
    p_period  text,
    p_from    text,
    p_to      text,
    OUT message text,
    OUT hint    text)
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_closed   CONSTANT text[] := ARRAY['CLOSED', 'PERMANENTLY_CLOSED', 'ARCHIVED', 'RESTORED'];
    v_locked   CONSTANT text[] := ARRAY['PERMANENTLY_CLOSED', 'ARCHIVED', 'RESTORED'];
    v_blockers text;
    v_first    text;
    v_allowed  text;
    v_previous record;
BEGIN
    IF p_from IS NOT DISTINCT FROM p_to THEN
        message := format('period %s is already %s', p_period, coalesce(p_from, 'absent'));
        hint := 'Nothing to do.';
        RETURN;
    END IF;

    IF NOT EXISTS (SELECT FROM gl.period_transition AS t
                   WHERE t.from_status IS NOT DISTINCT FROM p_from
                     AND t.to_status IS NOT DISTINCT FROM p_to) THEN
        IF p_from IS NULL THEN
            message := format('period %s does not exist, and a period is created FUTURE or '
                              'OPEN, not %s', p_period, p_to);
            hint := format('Open it with `monthend period open %s`.', p_period);
        ELSIF p_from = 'PERMANENTLY_CLOSED' THEN
            message := format('period %s is PERMANENTLY_CLOSED: nothing may change it', p_period);
            hint := 'Post corrections in an open period.';
        ELSE
            SELECT string_agg(coalesce(t.to_status, 'deleted')
                              || CASE WHEN t.command IS NOT NULL
                                      THEN format(' (`monthend period %s %s%s`)', t.command,
                                                  p_period,
                                                  CASE t.command WHEN 'reopen'
                                                       THEN ' --reason TEXT' ELSE '' END)
                                      ELSE '' END,
                              ', ' ORDER BY t.to_status)
              INTO v_allowed
              FROM gl.period_transition AS t WHERE t.from_status = p_from;
            message := format('period %s is %s and cannot become %s', p_period, p_from,
                              coalesce(p_to, 'deleted'));
            hint := format('From %s a period can become: %s.', p_from,
                           coalesce(v_allowed, 'nothing'));
        END IF;
        RETURN;
    END IF;

    IF p_to = 'CLOSED' THEN
        SELECT string_agg(format('%s (%s)', ap.period, ap.status), ', ' ORDER BY ap.period),
               min(ap.period)
          INTO v_blockers, v_first
          FROM gl.accounting_period AS ap
         WHERE ap.period < p_period AND ap.status <> ALL (v_closed);
        IF v_blockers IS NOT NULL THEN
            message := format('period %s cannot be closed while an earlier period is not '
                              'closed: %s', p_period, v_blockers);
            hint := format('Close periods in order: `monthend period close %s` first (open '
                           'it before if it is FUTURE).', v_first);
            RETURN;
        END IF;
        SELECT ap.period, ap.seal_digest INTO v_previous
          FROM gl.accounting_period AS ap
         WHERE ap.period < p_period ORDER BY ap.period DESC LIMIT 1;
        IF v_previous.period IS NOT NULL AND v_previous.seal_digest IS NULL THEN
            message := format('period %s cannot be closed: the period before it, %s, was '
                              'closed without balances', p_period, v_previous.period);
            hint := format('Reopen %s and close it again (`monthend period reopen %s --reason '
                           'TEXT`, then `monthend period close %s`), so that its closing '
                           'balances carry forward.', v_previous.period, v_previous.period,
                           v_previous.period);
            RETURN;
        END IF;
    ELSIF p_from = 'CLOSED' AND p_to = 'OPEN' THEN
        SELECT string_agg(format('%s (%s)', ap.period, ap.status), ', ' ORDER BY ap.period),
               max(ap.period)
          INTO v_blockers, v_first
          FROM gl.accounting_period AS ap
         WHERE ap.period > p_period AND ap.status = ANY (v_closed);
        IF v_blockers IS NOT NULL THEN
            message := format('period %s cannot be reopened while a later period is closed: '
                              '%s', p_period, v_blockers);
            hint := format('Reopen the latest closed period first: `monthend period reopen %s '
                           '--reason TEXT`.', v_first);
            RETURN;
        END IF;
    ELSIF p_to = 'PERMANENTLY_CLOSED' THEN
        SELECT string_agg(format('%s (%s)', ap.period, ap.status), ', ' ORDER BY ap.period),
               min(ap.period)
          INTO v_blockers, v_first
          FROM gl.accounting_period AS ap
         WHERE ap.period < p_period AND ap.status <> ALL (v_locked);
        IF v_blockers IS NOT NULL THEN
            message := format('period %s cannot be permanently closed while an earlier '
                              'period is not: %s', p_period, v_blockers);
            hint := format('Lock periods in order: `monthend period lock %s` first.', v_first);
            RETURN;
        END IF;
    ELSIF p_from IS NULL THEN
        SELECT string_agg(format('%s (%s)', ap.period, ap.status), ', ' ORDER BY ap.period)
          INTO v_blockers
          FROM gl.accounting_period AS ap
         WHERE ap.period > p_period AND ap.status = ANY (v_closed);
        IF v_blockers IS NOT NULL THEN
            message := format('period %s cannot be created before a closed period: %s',
                              p_period, v_blockers);
            hint := 'Balances were carried past it already; post into an open period instead.';
            RETURN;
        END IF;
    END IF;
END
$$;
