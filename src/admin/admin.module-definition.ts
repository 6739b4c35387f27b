import { ConfigurableModuleBuilder } from '@nestjs/common';
import type { TombstoneAdminOptions } from './admin.options.js';

export const {
  ConfigurableModuleClass: ConfigurableAdminModuleClass,
  MODULE_OPTIONS_TOKEN: ADMIN_MODULE_OPTIONS,
  OPTIONS_TYPE: ADMIN_OPTIONS_TYPE,
  ASYNC_OPTIONS_TYPE: ADMIN_ASYNC_OPTIONS_TYPE,
} = new ConfigurableModuleBuilder<TombstoneAdminOptions>({ moduleName: 'TombstoneAdmin' })
  .setClassMethodName('forRoot')
  .setFactoryMethodName('createTombstoneAdminOptions')
  .build();

/** Token of the resolved admin options. Internal. */
export const TOMBSTONE_ADMIN_OPTIONS = Symbol('TOMBSTONE_ADMIN_OPTIONS');
