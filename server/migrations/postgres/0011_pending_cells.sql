-- Cells of part 'u' hold the denominator's records whose outcome is not known yet (a birth
-- whose 60 days have not passed), one cell per day of the record's date: the period column
-- holds that day. The view keeps to numerators and denominators, as before.
DROP VIEW indicator_values;
CREATE VIEW indicator_values AS
SELECT indicator, commune, period,
       SUM(CASE WHEN part = 'n' THEN value ELSE 0 END) AS numerator,
       SUM(CASE WHEN part = 'd' THEN value ELSE 0 END) AS denominator,
       SUM(conflicted) AS conflicted_records
FROM indicator_cells
WHERE records <> 0 AND part IN ('n', 'd')
GROUP BY indicator, commune, period;
