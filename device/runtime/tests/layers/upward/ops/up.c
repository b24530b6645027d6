/* A layer-check fixture: an op including the API layer above it. */
#include "api/api.h"
