/*
 * api.h — what the public entry points (model.c, session.c, platform/) share: the arena plan
 * computed at load (arena.c). The top of the engine's layers: may include any layer below
 * (format/, plan/, ops/, reference/, compute/, base/).
 */
#ifndef TETHER_API_H_
#define TETHER_API_H_

#include "base/base.h"
#include "compute/compute.h"
#include "ops/ops.h"
#include "plan/plan.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Plans the arena of a validated model: every used tensor's arena_offset and every op's
 * scratch_offset, and model->activation_bytes, scratch_bytes and arena_size. */
tether_status tether_plan_model(struct tether_model* model);

#ifdef __cplusplus
}  /* extern "C" */
#endif

#endif  /* TETHER_API_H_ */
