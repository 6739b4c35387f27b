import { ConfigurableModuleBuilder } from '@nestjs/common';
import type { TombstoneEventsOptions } from './events.options.js';

export const {
  ConfigurableModuleClass: ConfigurableEventsModuleClass,
  MODULE_OPTIONS_TOKEN: EVENTS_MODULE_OPTIONS,
  OPTIONS_TYPE: EVENTS_OPTIONS_TYPE,
  ASYNC_OPTIONS_TYPE: EVENTS_ASYNC_OPTIONS_TYPE,
} = new ConfigurableModuleBuilder<TombstoneEventsOptions>({ moduleName: 'TombstoneEvents' })
  .setClassMethodName('forRoot')
  .setFactoryMethodName('createTombstoneEventsOptions')
  .build();

/** Token of the resolved events options. Internal. */
export const TOMBSTONE_EVENTS_OPTIONS = Symbol('TOMBSTONE_EVENTS_OPTIONS');
