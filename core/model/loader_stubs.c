/* Temporary: loaders not written yet. */
#include "core/error.h"
#include "core/model/model_internal.h"
int qins_hf_load(qins_model *m, const char *dir) { return qins_error_set(QINS_EUNSUPPORTED, "%s: HF folders not yet supported", dir); }
int qins_st_model_load(qins_model *m, const char *path) { return qins_error_set(QINS_EUNSUPPORTED, "%s: safetensors not yet supported", path); }
void qins_st_close(qins_st_file *f) { (void)f; }
