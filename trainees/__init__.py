"""Trainee records: the SQLite database of trainees, devices and attempts, proficiency rules, the next
exercise, reports and the xAPI export. Consumes procedure results (ProcedureResult JSON); procedures
never import this package."""
