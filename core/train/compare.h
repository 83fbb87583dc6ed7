/* Teacher/student agreement for finetuning and distillation reports (C2): KL(teacher || student)
 * per position, greedy (argmax) agreement and both models' cross-entropy, on fixed held-out
 * windows, computed with the inference runtime (core/llm) on the cpu backend. */
#ifndef QINS_TRAIN_COMPARE_H
#define QINS_TRAIN_COMPARE_H

#include <stdint.h>

#include "core/train/data.h"

typedef struct qins_agreement {
  double kl;            /* mean over positions of sum_v p_t (log p_t - log p_s), nats */
  double agree;         /* fraction of positions where argmax teacher == argmax student */
  double teacher_loss;  /* mean cross-entropy on the next ids */
  double student_loss;
  int64_t positions;
} qins_agreement;

/* Model paths as qins_model_open takes them; windows of T+1 ids from sp (T scored positions each). */
int qins_train_compare(const char *teacher, const char *student, const qins_data_split *sp, int T, int windows,
                       qins_agreement *out);

#endif
