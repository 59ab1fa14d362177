/*-------------------------------------------------------------------------
 *
 * register.h
 *	  bf_register and its size limit batchflow.max_definition_size
 *	  (register.c).
 *
 * IDENTIFICATION
 *	  src/register.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHFLOW_REGISTER_H
#define BATCHFLOW_REGISTER_H

#include "postgres.h"

extern int	bf_max_definition_kb;
extern void bf_register_define_gucs(void);

#endif							/* BATCHFLOW_REGISTER_H */
