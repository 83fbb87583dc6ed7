/* Live gate progress for the dashboard: one row per gate {name, progress, metric, value,
 * threshold, verdict}, updated by qins_gate_run and its threshold checks, read as the monitor's
 * gates document (monitor/monitor.h). Process-wide and thread-safe. */
#ifndef QINS_GATE_BOARD_H
#define QINS_GATE_BOARD_H

void qins_gate_board_reset(void);
/* A gate that will run later in this process (`qins gate all`): progress 0, verdict "queued". */
void qins_gate_board_queue(const char *gate);
/* The gate starts: verdict "running"; expected_checks (>= 1) scales progress as checks come in. */
void qins_gate_board_begin(const char *gate, int expected_checks);
/* One threshold check of a running gate: the row shows its measure, value and threshold. */
void qins_gate_board_check(const char *gate, const char *what, double value, double threshold, int pass);
/* The gate's report is written: progress 1 and its verdict (pass, fail, not-run). A failing gate
 * keeps showing its first failed check. */
void qins_gate_board_finish(const char *gate, const char *verdict);
/* {"gates":[{"name","progress","metric","value","threshold","verdict"}]} (free with free()); NULL
 * when no gate was ever queued or begun. */
char *qins_gate_board_json(void);

#endif
