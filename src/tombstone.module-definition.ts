import { ConfigurableModuleBuilder } from '@nestjs/common';
import { APP_INTERCEPTOR } from '@nestjs/core';
import { TombstoneContextInterceptor } from './tombstone.context.js';
import type { TombstoneModuleOptions } from './tombstone.options.js';

export const {
  ConfigurableModuleClass,
  MODULE_OPTIONS_TOKEN,
  OPTIONS_TYPE,
  ASYNC_OPTIONS_TYPE,
} = new ConfigurableModuleBuilder<TombstoneModuleOptions>({ moduleName: 'Tombstone' })
  .setClassMethodName('forRoot')
  .setFactoryMethodName('createTombstoneOptions')
  .setExtras({ isGlobal: false, requestContext: false }, (definition, extras) => ({
    ...definition,
    global: extras.isGlobal,
    // Only when asked: a global interceptor costs every route of the application a little.
    providers: extras.requestContext
      ? [...(definition.providers ?? []), { provide: APP_INTERCEPTOR, useClass: TombstoneContextInterceptor }]
      : definition.providers,
  }))
  .build();
