/*-------------------------------------------------------------------------
 *
 * input_check.h
 *	  bf_start's checks of its input (input_check.c).
 *
 * IDENTIFICATION
 *	  src/input_check.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BF_INPUT_CHECK_H
#define BF_INPUT_CHECK_H

#include "utils/jsonb.h"

extern const char *bf_jsonb_type(Jsonb *jb);
extern void bf_check_start_input(const char *workflow, Jsonb *definition,
								 Jsonb *input);

#endif							/* BF_INPUT_CHECK_H */
